// Specs, environment and resolution from a hub cache the test builds itself (no network).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <set>

#include "server/sources/hf_cache_internal.h"
#include "server/sources/hf_hub.h"
#include "tests/sources/test_util.h"

namespace embedserve::sources {
namespace {

using testing::FakeEnv;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

constexpr char kSha1[] = "1111111111111111111111111111111111111111";
constexpr char kSha2[] = "2222222222222222222222222222222222222222";

// Writes blobs/<etag> and a relative snapshot link to it, the way huggingface_hub does.
void AddCachedFile(const std::string& repo_dir, const std::string& sha, const std::string& file,
                   const std::string& etag, const std::string& content) {
  WriteFile(repo_dir + "/blobs/" + etag, content);
  const std::string pointer = repo_dir + "/snapshots/" + sha + "/" + file;
  std::filesystem::create_directories(std::filesystem::path(pointer).parent_path());
  std::filesystem::create_symlink("../../blobs/" + etag, pointer);
}

SourceOptions Offline(const std::string& cache) {
  SourceOptions o;
  o.cache_dir = cache;
  o.offline = true;
  return o;
}

TEST_CASE("parses hf: specs with and without a revision", "[sources]") {
  auto s = ParseHfSpec("hf:laion/CLIP-ViT-B-32-laion2B-s34B-b79K");
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  CHECK(s->repo_id == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K");
  CHECK(s->revision == "main");

  s = ParseHfSpec("hf:vidore/colpali-v1.3@v1.0");
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  CHECK(s->revision == "v1.0");

  s = ParseHfSpec("hf:org/repo@refs/pr/3");
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  CHECK(s->revision == "refs/pr/3");

  s = ParseHfSpec("hf:gpt2");
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  CHECK(s->repo_id == "gpt2");
}

TEST_CASE("rejects malformed hf: specs with the expected form in the message", "[sources]") {
  for (const char* bad : {"hf:", "hf:/repo", "hf:org/", "hf:a/b/c", "hf:org/re po",
                          "hf:org/repo@", "hf:org/repo@../x", "hf:org/repo@a//b",
                          "hf:org/..repo", "hf:org--x/repo", "hf:org/repo@/abs"}) {
    INFO(bad);
    auto s = ParseHfSpec(bad);
    CHECK(absl::IsInvalidArgument(s.status()));
    CHECK_THAT(std::string(s.status().message()), Catch::Contains("hf:ORG/REPO"));
  }
}

TEST_CASE("names the repo folder as huggingface_hub does", "[sources]") {
  CHECK(RepoFolderName("laion/CLIP-ViT-B-32") == "models--laion--CLIP-ViT-B-32");
  CHECK(RepoFolderName("gpt2") == "models--gpt2");
}

TEST_CASE("finds the hub cache: HF_HUB_CACHE, then HF_HOME/hub, then ~/.cache", "[sources]") {
  CHECK(HubCacheDir(FakeEnv({{"HF_HUB_CACHE", "/a"}, {"HF_HOME", "/b"}, {"HOME", "/h"}})) ==
        "/a");
  CHECK(HubCacheDir(FakeEnv({{"HUGGINGFACE_HUB_CACHE", "/legacy"}, {"HF_HOME", "/b"}})) ==
        "/legacy");
  CHECK(HubCacheDir(FakeEnv({{"HF_HOME", "/b"}, {"XDG_CACHE_HOME", "/x"}, {"HOME", "/h"}})) ==
        "/b/hub");
  CHECK(HubCacheDir(FakeEnv({{"XDG_CACHE_HOME", "/x"}, {"HOME", "/h"}})) ==
        "/x/huggingface/hub");
  CHECK(HubCacheDir(FakeEnv({{"HOME", "/h"}})) == "/h/.cache/huggingface/hub");
  CHECK(HubCacheDir(FakeEnv({{"HF_HUB_CACHE", "~/c"}, {"HOME", "/h"}})) == "/h/c");
  // An empty variable counts as unset.
  CHECK(HubCacheDir(FakeEnv({{"HF_HUB_CACHE", ""}, {"HF_HOME", "/b"}})) == "/b/hub");
}

TEST_CASE("reads offline mode, endpoint and token from the environment", "[sources]") {
  CHECK(OfflineFromEnv(FakeEnv({{"HF_HUB_OFFLINE", "1"}})));
  CHECK(OfflineFromEnv(FakeEnv({{"HF_HUB_OFFLINE", "true"}})));
  CHECK(OfflineFromEnv(FakeEnv({{"TRANSFORMERS_OFFLINE", "YES"}})));
  CHECK_FALSE(OfflineFromEnv(FakeEnv({{"HF_HUB_OFFLINE", "0"}})));
  CHECK_FALSE(OfflineFromEnv(FakeEnv({})));

  CHECK(EndpointFromEnv(FakeEnv({})) == "https://huggingface.co");
  CHECK(EndpointFromEnv(FakeEnv({{"HF_ENDPOINT", "http://mirror:8080/"}})) ==
        "http://mirror:8080");

  TempDir home;
  WriteFile(home.path() + "/token", "hf_saved\n");
  CHECK(TokenFromEnv(FakeEnv({{"HF_TOKEN", "hf_env"}, {"HF_HOME", home.path()}})) == "hf_env");
  CHECK(TokenFromEnv(FakeEnv({{"HF_HOME", home.path()}})) == "hf_saved");
  CHECK(TokenFromEnv(FakeEnv({{"HF_HOME", home.path() + "/none"}})).empty());
}

TEST_CASE("resolves a cached repo through refs to its snapshot", "[sources]") {
  TempDir cache;
  const std::string repo = cache.path() + "/models--org--clip";
  AddCachedFile(repo, kSha1, "open_clip_config.json", "aaa1", "{\"old\":1}");
  AddCachedFile(repo, kSha1, "open_clip_model.safetensors", "bbb1", "weights-old");
  AddCachedFile(repo, kSha2, "open_clip_config.json", "aaa2", "{\"new\":1}");
  AddCachedFile(repo, kSha2, "open_clip_model.safetensors", "bbb2", "weights-new");
  WriteFile(repo + "/refs/main", kSha2);  // huggingface_hub writes no newline
  WriteFile(repo + "/refs/v1", std::string(kSha1) + "\n");

  SECTION("a branch name goes through refs/") {
    auto dir = ResolveModelSource("hf:org/clip", Offline(cache.path()));
    INFO(dir.status().ToString());
    REQUIRE(dir.ok());
    CHECK(*dir == repo + "/snapshots/" + kSha2);
    CHECK(ReadFile(*dir + "/open_clip_model.safetensors") == "weights-new");
  }
  SECTION("a tag goes through refs/ too, tolerating a trailing newline") {
    auto dir = ResolveModelSource("hf:org/clip@v1", Offline(cache.path()));
    INFO(dir.status().ToString());
    REQUIRE(dir.ok());
    CHECK(*dir == repo + "/snapshots/" + kSha1);
  }
  SECTION("a commit sha names the snapshot directly") {
    auto dir = ResolveModelSource(std::string("hf:org/clip@") + kSha1, Offline(cache.path()));
    INFO(dir.status().ToString());
    REQUIRE(dir.ok());
    CHECK(ReadFile(*dir + "/open_clip_config.json") == "{\"old\":1}");
  }
  SECTION("a revision with no ref is NOT_FOUND naming it and the way out") {
    auto dir = ResolveModelSource("hf:org/clip@dev", Offline(cache.path()));
    REQUIRE(absl::IsNotFound(dir.status()));
    const std::string msg(dir.status().message());
    CHECK_THAT(msg, Catch::Contains("hf:org/clip@dev"));
    CHECK_THAT(msg, Catch::Contains("refs/dev"));
    CHECK_THAT(msg, Catch::Contains("HF_HUB_OFFLINE"));
  }
  SECTION("a sha without a snapshot is NOT_FOUND") {
    auto dir = ResolveModelSource("hf:org/clip@" + std::string(40, 'c'), Offline(cache.path()));
    CHECK(absl::IsNotFound(dir.status()));
  }
  SECTION("a repo not in the cache is NOT_FOUND naming the folder") {
    auto dir = ResolveModelSource("hf:org/other", Offline(cache.path()));
    REQUIRE(absl::IsNotFound(dir.status()));
    CHECK_THAT(std::string(dir.status().message()), Catch::Contains("models--org--other"));
  }
}

TEST_CASE("offline resolution names a required file the snapshot lacks", "[sources]") {
  TempDir cache;
  const std::string repo = cache.path() + "/models--org--clip";
  AddCachedFile(repo, kSha1, "open_clip_config.json", "aaa1", "{}");
  WriteFile(repo + "/refs/main", kSha1);
  auto dir = ResolveModelSource("hf:org/clip", Offline(cache.path()));
  REQUIRE(absl::IsNotFound(dir.status()));
  CHECK_THAT(std::string(dir.status().message()),
             Catch::Contains("open_clip_model.safetensors"));
}

TEST_CASE("offline resolution checks every shard a safetensors index names", "[sources]") {
  TempDir cache;
  const std::string repo = cache.path() + "/models--org--colpali";
  AddCachedFile(repo, kSha1, "config.json", "c1", "{}");
  AddCachedFile(repo, kSha1, "model.safetensors.index.json", "i1",
                R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
                R"("b":"model-00002-of-00002.safetensors"}})");
  AddCachedFile(repo, kSha1, "model-00001-of-00002.safetensors", "s1", "shard1");
  WriteFile(repo + "/refs/main", kSha1);

  auto dir = ResolveModelSource("hf:org/colpali", Offline(cache.path()));
  REQUIRE(absl::IsNotFound(dir.status()));
  CHECK_THAT(std::string(dir.status().message()),
             Catch::Contains("model-00002-of-00002.safetensors"));

  AddCachedFile(repo, kSha1, "model-00002-of-00002.safetensors", "s2", "shard2");
  dir = ResolveModelSource("hf:org/colpali", Offline(cache.path()));
  INFO(dir.status().ToString());
  REQUIRE(dir.ok());
  CHECK(*dir == repo + "/snapshots/" + kSha1);
}

TEST_CASE("a dangling snapshot link counts as a missing file", "[sources]") {
  TempDir cache;
  const std::string repo = cache.path() + "/models--org--clip";
  AddCachedFile(repo, kSha1, "open_clip_config.json", "aaa1", "{}");
  AddCachedFile(repo, kSha1, "open_clip_model.safetensors", "bbb1", "w");
  std::filesystem::remove(repo + "/blobs/bbb1");
  auto dir = ResolveModelSource(std::string("hf:org/clip@") + kSha1, Offline(cache.path()));
  CHECK(absl::IsNotFound(dir.status()));
}

TEST_CASE("plain directories pass through unchanged", "[sources]") {
  TempDir dir;
  auto r = ResolveModelSource(dir.path());
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  CHECK(*r == dir.path());

  r = ResolveModelSource(dir.path() + "/missing");
  CHECK(absl::IsNotFound(r.status()));
}

TEST_CASE("resolution uses HF_HUB_CACHE from the process environment", "[sources]") {
  TempDir cache;
  const std::string repo = cache.path() + "/models--org--clip";
  AddCachedFile(repo, kSha1, "open_clip_config.json", "aaa1", "{}");
  AddCachedFile(repo, kSha1, "open_clip_model.safetensors", "bbb1", "w");
  WriteFile(repo + "/refs/main", kSha1);
  ::setenv("HF_HUB_CACHE", cache.path().c_str(), 1);
  ::setenv("HF_HUB_OFFLINE", "1", 1);
  auto dir = ResolveModelSource("hf:org/clip");
  ::unsetenv("HF_HUB_CACHE");
  ::unsetenv("HF_HUB_OFFLINE");
  INFO(dir.status().ToString());
  REQUIRE(dir.ok());
  CHECK(*dir == repo + "/snapshots/" + kSha1);
}

TEST_CASE("a .bin checkpoint is fetched only where the repo has no safetensors one",
          "[sources]") {
  auto select = [](std::set<std::string> files, const std::vector<FileWant>& wants) {
    return internal::SelectFiles(
        wants, [&](const std::string& name) { return files.count(name) > 0; }, "hf:org/x",
        "the repo");
  };
  auto both = select({"config.json", "model.safetensors", "pytorch_model.bin"},
                     HfTransformersFiles());
  REQUIRE(both.ok());
  CHECK(*both == std::vector<std::string>{"config.json", "model.safetensors"});
  auto bin_only = select({"config.json", "pytorch_model.bin"}, HfTransformersFiles());
  REQUIRE(bin_only.ok());
  CHECK(*bin_only == std::vector<std::string>{"config.json", "pytorch_model.bin"});
  auto clip = select({"open_clip_config.json", "open_clip_pytorch_model.bin"}, OpenClipFiles());
  REQUIRE(clip.ok());
  CHECK(*clip ==
        std::vector<std::string>{"open_clip_config.json", "open_clip_pytorch_model.bin"});
  auto neither = select({"open_clip_config.json"}, OpenClipFiles());
  REQUIRE_FALSE(neither.ok());
  CHECK_THAT(std::string(neither.status().message()),
             Catch::Contains("open_clip_model.safetensors or open_clip_pytorch_model.bin"));
}

}  // namespace
}  // namespace embedserve::sources
