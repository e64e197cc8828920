// Downloads against a fake hub (tests/sources/fake_hub.py) on loopback: the cache layout
// they leave, byte for byte, resume after a dropped connection, checksum failures, gated
// repos, offline mode and falling back to the cache.
#include <openssl/evp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/sources/hf_hub.h"
#include "server/sources/http_client.h"
#include "tests/sources/test_util.h"

#ifndef EMBEDSERVE_FAKE_HUB
#error "EMBEDSERVE_FAKE_HUB must name tests/sources/fake_hub.py"
#endif
#ifndef EMBEDSERVE_PYTHON
#define EMBEDSERVE_PYTHON "/usr/bin/python3"
#endif

namespace embedserve::sources {
namespace {

namespace fs = std::filesystem;
using testing::PatternBytes;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

constexpr char kClipSha[] = "c11bc11bc11bc11bc11bc11bc11bc11bc11bc11b";
constexpr char kColSha[] = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
constexpr char kOtherSha[] = "0123456789abcdef0123456789abcdef01234567";
constexpr char kToken[] = "hf_fake_token";

std::string Digest(const EVP_MD* md, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += absl::StrCat(absl::Hex(out[i], absl::kZeroPad2));
  return hex;
}
std::string Sha256(const std::string& d) { return Digest(EVP_sha256(), d); }
std::string GitBlobSha1(const std::string& d) {
  return Digest(EVP_sha1(), absl::StrCat("blob ", d.size(), std::string(1, '\0'), d));
}

// The fake hub process, serving the manifest it is given; killed on destruction.
class FakeHub {
 public:
  explicit FakeHub(const std::string& manifest_path) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl(EMBEDSERVE_PYTHON, EMBEDSERVE_PYTHON, EMBEDSERVE_FAKE_HUB, manifest_path.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    FILE* out = ::fdopen(fds[0], "r");
    REQUIRE(out != nullptr);
    char line[64] = {0};
    const bool got = std::fgets(line, sizeof line, out) != nullptr;
    std::fclose(out);
    REQUIRE(got);
    port_ = std::atoi(line);
    REQUIRE(port_ > 0);
  }
  ~FakeHub() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  std::string endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }

  // Every request the hub has seen, oldest first.
  nlohmann::json Log() const {
    internal::HttpRequest req;
    req.url = endpoint() + "/_log";
    auto r = internal::Fetch(req);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    return nlohmann::json::parse(r->body);
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

struct RepoFile {
  std::string content;
  bool lfs = false;
  bool drop_first = false;
  bool wrong_sha = false;
};

// One fake hub with a few repos, and an empty cache to download into.
class HubFixture {
 public:
  HubFixture() {
    clip_weights_ = PatternBytes(3 << 20, 1);
    shard1_ = PatternBytes(700 << 10, 2);
    shard2_ = PatternBytes(300 << 10, 3);
    const std::string index =
        R"({"metadata":{"total_size":1},"weight_map":{)"
        R"("a.weight":"model-00001-of-00002.safetensors",)"
        R"("b.weight":"model-00002-of-00002.safetensors",)"
        R"("c.weight":"model-00001-of-00002.safetensors"}})";
    files_["org/clip"] = {
        {"open_clip_config.json", {R"({"model_cfg":{"embed_dim":512}})"}},
        {"open_clip_model.safetensors", {clip_weights_, true, /*drop_first=*/true}},
        {"vocab.json", {R"({"a":0})"}},
        {"README.md", {"# not wanted"}},
    };
    files_["org/colpali"] = {
        {"config.json", {R"({"model_type":"colpali"})"}},
        {"model.safetensors.index.json", {index}},
        {"model-00001-of-00002.safetensors", {shard1_, true}},
        {"model-00002-of-00002.safetensors", {shard2_, true}},
        {"tokenizer.model", {PatternBytes(1000, 4), true}},
        {"preprocessor_config.json", {"{}"}},
        {"open_clip_pytorch_model.bin", {"not wanted"}},
    };
    files_["org/tampered"] = {
        {"open_clip_config.json", {"{}"}},
        {"open_clip_model.safetensors", {PatternBytes(5000, 5), true, false, /*wrong_sha=*/true}},
    };
    files_["org/gated"] = {
        {"open_clip_config.json", {"{}"}},
        {"open_clip_model.safetensors", {PatternBytes(4000, 6), true}},
    };
    files_["org/broken-index"] = {
        {"config.json", {"{}"}},
        {"model.safetensors.index.json", {R"({"weight_map":{"x":"model-00009.safetensors"}})"}},
    };
    files_["org/bad-listing"] = {{"config.json", {"{}"}}};

    nlohmann::json manifest;
    manifest["token"] = kToken;
    auto add_repo = [&](const std::string& id, const std::string& sha, bool gated) {
      nlohmann::json repo;
      repo["sha"] = sha;
      repo["refs"] = {{"main", sha}, {"v1", sha}};
      repo["gated"] = gated;
      repo["bad_listing"] = id == "org/bad-listing";
      int n = 0;
      for (const auto& [name, f] : files_[id]) {
        const std::string path = absl::StrCat(work_.path(), "/content/", id, "/", n++);
        WriteFile(path, f.content);
        repo["files"][name] = {{"path", path}, {"lfs", f.lfs}, {"drop_first", f.drop_first},
                               {"wrong_sha", f.wrong_sha}};
      }
      manifest["repos"][id] = repo;
    };
    add_repo("org/clip", kClipSha, false);
    add_repo("org/colpali", kColSha, false);
    add_repo("org/tampered", kOtherSha, false);
    add_repo("org/gated", kOtherSha, true);
    add_repo("org/broken-index", kOtherSha, false);
    add_repo("org/bad-listing", kOtherSha, false);
    const std::string manifest_path = work_.path() + "/manifest.json";
    WriteFile(manifest_path, manifest.dump());
    hub_ = std::make_unique<FakeHub>(manifest_path);
    cache_ = work_.path() + "/cache";
  }

  SourceOptions Options() {
    SourceOptions o;
    o.cache_dir = cache_;
    o.offline = false;
    o.endpoint = hub_->endpoint();
    o.token = "";
    o.retry_delay_ms = 10;
    o.progress = [this](const DownloadProgress& p) {
      std::lock_guard<std::mutex> lock(mu_);
      progress_.push_back(p);
    };
    return o;
  }

  // The blob name the hub's ETag gives `file` of `repo`.
  std::string Etag(const std::string& repo, const std::string& file) {
    const RepoFile& f = files_[repo][file];
    return f.lfs ? Sha256(f.content) : GitBlobSha1(f.content);
  }

  // Checks snapshots/<sha>/<file> is a relative link to blobs/<etag> holding the content.
  void CheckCached(const std::string& repo, const std::string& sha, const std::string& file) {
    INFO(repo << " " << file);
    const std::string repo_dir = cache_ + "/" + RepoFolderName(repo);
    const std::string pointer = repo_dir + "/snapshots/" + sha + "/" + file;
    REQUIRE(fs::is_symlink(pointer));
    CHECK(fs::read_symlink(pointer).string() == "../../blobs/" + Etag(repo, file));
    const std::string blob = repo_dir + "/blobs/" + Etag(repo, file);
    REQUIRE(fs::is_regular_file(blob));
    CHECK(ReadFile(blob) == files_[repo][file].content);  // byte for byte
    CHECK(ReadFile(pointer) == files_[repo][file].content);
  }

  std::vector<std::string> BlobNames(const std::string& repo) {
    std::vector<std::string> names;
    const std::string dir = cache_ + "/" + RepoFolderName(repo) + "/blobs";
    if (!fs::exists(dir)) return names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
    return names;
  }

  TempDir work_;
  std::unique_ptr<FakeHub> hub_;
  std::string cache_;
  std::map<std::string, std::map<std::string, RepoFile>> files_;
  std::string clip_weights_, shard1_, shard2_;
  std::mutex mu_;
  std::vector<DownloadProgress> progress_;
};

TEST_CASE("downloads an OpenCLIP repo into the hub cache layout, resuming a dropped transfer",
          "[sources][download]") {
  HubFixture f;
  auto dir = ResolveModelSource("hf:org/clip", f.Options());
  INFO(dir.status().ToString());
  REQUIRE(dir.ok());
  const std::string repo_dir = f.cache_ + "/models--org--clip";
  CHECK(*dir == repo_dir + "/snapshots/" + kClipSha);
  f.CheckCached("org/clip", kClipSha, "open_clip_config.json");
  f.CheckCached("org/clip", kClipSha, "open_clip_model.safetensors");
  f.CheckCached("org/clip", kClipSha, "vocab.json");
  CHECK_FALSE(fs::exists(*dir + "/README.md"));  // not a file the loader reads
  CHECK(ReadFile(repo_dir + "/refs/main") == kClipSha);
  for (const std::string& name : f.BlobNames("org/clip")) {
    CHECK_FALSE(absl::EndsWith(name, ".incomplete"));
  }

  // The first blob GET was cut at half; the second asked for the rest with a Range.
  const nlohmann::json log = f.hub_->Log();
  std::vector<std::string> ranges;
  for (const auto& e : log) {
    if (absl::StartsWith(e["path"].get<std::string>(), "/_lfs/") && e["method"] == "GET") {
      ranges.push_back(e["range"]);
    }
  }
  REQUIRE(ranges.size() == 2);
  CHECK(ranges[0].empty());
  CHECK(ranges[1] == absl::StrCat("bytes=", f.clip_weights_.size() / 2, "-"));
  CHECK(!f.progress_.empty());
  CHECK(f.progress_.back().finished);

  SECTION("a second resolution only asks for the revision listing") {
    const size_t before = f.hub_->Log().size();
    auto again = ResolveModelSource("hf:org/clip", f.Options());
    INFO(again.status().ToString());
    REQUIRE(again.ok());
    CHECK(*again == *dir);
    const nlohmann::json after = f.hub_->Log();
    REQUIRE(after.size() == before + 2);  // the listing, and this /_log call
    CHECK_THAT(after[before]["path"].get<std::string>(),
               Catch::StartsWith("/api/models/org/clip/revision/main"));
  }
  SECTION("offline mode then serves it from the cache without any request") {
    SourceOptions o = f.Options();
    o.offline = true;
    o.endpoint = "http://127.0.0.1:1";
    auto offline = ResolveModelSource("hf:org/clip", o);
    INFO(offline.status().ToString());
    REQUIRE(offline.ok());
    CHECK(*offline == *dir);
    offline = ResolveModelSource(std::string("hf:org/clip@") + kClipSha, o);
    INFO(offline.status().ToString());
    REQUIRE(offline.ok());
    CHECK(*offline == *dir);
  }
  SECTION("a commit sha with a complete snapshot needs no request") {
    const size_t before = f.hub_->Log().size();
    auto by_sha = ResolveModelSource(std::string("hf:org/clip@") + kClipSha, f.Options());
    INFO(by_sha.status().ToString());
    REQUIRE(by_sha.ok());
    CHECK(*by_sha == *dir);
    CHECK(f.hub_->Log().size() == before + 1);  // only this /_log call
  }
  SECTION("an unreachable hub falls back to the complete cached snapshot") {
    SourceOptions o = f.Options();
    o.endpoint = "http://127.0.0.1:1";
    auto fallback = ResolveModelSource("hf:org/clip", o);
    INFO(fallback.status().ToString());
    REQUIRE(fallback.ok());
    CHECK(*fallback == *dir);
  }
}

TEST_CASE("downloads a sharded ColPali checkpoint by tag, with every shard its index names",
          "[sources][download]") {
  HubFixture f;
  auto dir = ResolveModelSource("hf:org/colpali@v1", f.Options());
  INFO(dir.status().ToString());
  REQUIRE(dir.ok());
  CHECK(*dir == f.cache_ + "/models--org--colpali/snapshots/" + kColSha);
  for (const char* file : {"config.json", "model.safetensors.index.json",
                           "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors", "tokenizer.model",
                           "preprocessor_config.json"}) {
    f.CheckCached("org/colpali", kColSha, file);
  }
  CHECK_FALSE(fs::exists(*dir + "/open_clip_pytorch_model.bin"));
  CHECK(ReadFile(f.cache_ + "/models--org--colpali/refs/v1") == kColSha);
  CHECK_FALSE(fs::exists(f.cache_ + "/models--org--colpali/refs/main"));
}

TEST_CASE("resumes from a .incomplete file left by an earlier run", "[sources][download]") {
  HubFixture f;
  const std::string etag = f.Etag("org/colpali", "model-00001-of-00002.safetensors");
  const std::string incomplete =
      f.cache_ + "/models--org--colpali/blobs/" + etag + ".incomplete";
  WriteFile(incomplete, f.shard1_.substr(0, 12345));
  auto dir = ResolveModelSource("hf:org/colpali", f.Options());
  INFO(dir.status().ToString());
  REQUIRE(dir.ok());
  f.CheckCached("org/colpali", kColSha, "model-00001-of-00002.safetensors");
  CHECK_FALSE(fs::exists(incomplete));
  bool resumed = false;
  for (const auto& e : f.hub_->Log()) {
    resumed = resumed || (e["path"] == "/_lfs/" + etag + "?signature=fake" &&
                          e["range"] == "bytes=12345-");
  }
  CHECK(resumed);
}

TEST_CASE("a download whose sha256 is not the ETag is DATA_LOSS and installs nothing",
          "[sources][download]") {
  HubFixture f;
  auto dir = ResolveModelSource("hf:org/tampered", f.Options());
  REQUIRE(absl::IsDataLoss(dir.status()));
  const std::string msg(dir.status().message());
  CHECK_THAT(msg, Catch::Contains("hf:org/tampered"));
  CHECK_THAT(msg, Catch::Contains("open_clip_model.safetensors"));
  CHECK_THAT(msg, Catch::Contains("sha256"));
  const std::string repo_dir = f.cache_ + "/models--org--tampered";
  CHECK_FALSE(fs::exists(repo_dir + "/snapshots/" + kOtherSha +
                         "/open_clip_model.safetensors"));
  for (const std::string& name : f.BlobNames("org/tampered")) {
    INFO(name);
    CHECK(name == f.Etag("org/tampered", "open_clip_config.json"));  // only the small file
  }
  CHECK_FALSE(fs::exists(repo_dir + "/refs/main"));
}

TEST_CASE("a gated repo asks for HF_TOKEN, refuses a wrong one, and accepts the right one",
          "[sources][download]") {
  HubFixture f;
  SourceOptions o = f.Options();
  auto dir = ResolveModelSource("hf:org/gated", o);
  REQUIRE(absl::IsUnauthenticated(dir.status()));
  std::string msg(dir.status().message());
  CHECK_THAT(msg, Catch::Contains("hf:org/gated"));
  CHECK_THAT(msg, Catch::Contains("HTTP 401"));
  CHECK_THAT(msg, Catch::Contains("set HF_TOKEN"));
  CHECK_THAT(msg, Catch::Contains("open_clip_config.json"));

  o.token = "hf_wrong";
  dir = ResolveModelSource("hf:org/gated", o);
  REQUIRE(absl::IsPermissionDenied(dir.status()));
  CHECK_THAT(std::string(dir.status().message()), Catch::Contains("accept its terms"));

  o.token = kToken;
  dir = ResolveModelSource("hf:org/gated", o);
  INFO(dir.status().ToString());
  REQUIRE(dir.ok());
  f.CheckCached("org/gated", kOtherSha, "open_clip_model.safetensors");
  bool sent_token = false;
  for (const auto& e : f.hub_->Log()) {
    sent_token = sent_token || e["authorization"] == std::string("Bearer ") + kToken;
  }
  CHECK(sent_token);
}

TEST_CASE("hub errors name the repo, the revision or the file", "[sources][download]") {
  HubFixture f;
  SECTION("unknown repo") {
    auto dir = ResolveModelSource("hf:org/nope", f.Options());
    REQUIRE(absl::IsNotFound(dir.status()));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("org/nope"));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("HTTP 404"));
  }
  SECTION("unknown revision") {
    auto dir = ResolveModelSource("hf:org/clip@nope", f.Options());
    REQUIRE(absl::IsNotFound(dir.status()));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("revision 'nope'"));
  }
  SECTION("an index naming a shard the repo lacks") {
    auto dir = ResolveModelSource("hf:org/broken-index", f.Options());
    REQUIRE(absl::IsNotFound(dir.status()));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("model-00009.safetensors"));
  }
  SECTION("a listing that is not JSON") {
    auto dir = ResolveModelSource("hf:org/bad-listing", f.Options());
    REQUIRE(absl::IsInternal(dir.status()));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("not a JSON object"));
  }
  SECTION("a required file the repo lacks") {
    SourceOptions o = f.Options();
    o.files = {{{"merges.txt"}, true}};
    auto dir = ResolveModelSource("hf:org/clip", o);
    REQUIRE(absl::IsNotFound(dir.status()));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("merges.txt"));
  }
  SECTION("an unreachable hub with nothing cached") {
    SourceOptions o = f.Options();
    o.endpoint = "http://127.0.0.1:1";
    auto dir = ResolveModelSource("hf:org/clip", o);
    REQUIRE(absl::IsUnavailable(dir.status()));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("HF_HUB_OFFLINE"));
  }
  SECTION("offline with nothing cached") {
    SourceOptions o = f.Options();
    o.offline = true;
    auto dir = ResolveModelSource("hf:org/clip", o);
    REQUIRE(absl::IsNotFound(dir.status()));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("hf:org/clip@main"));
    CHECK(f.hub_->Log().size() == 1);  // only the /_log call itself
  }
}

}  // namespace
}  // namespace embedserve::sources
