// The cache-only half of the hub resolver: environment, spec parsing, the cache layout and
// resolution without a network.
#include <sys/stat.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "server/sources/hf_cache_internal.h"
#include "server/sources/hf_hub.h"

namespace embedserve::sources {

using internal::IsRegularFile;

std::vector<FileWant> OpenClipFiles() {
  return {
      {{"open_clip_config.json"}, true},
      {{"open_clip_model.safetensors"}, true, {"open_clip_pytorch_model.bin"}},
      {{"vocab.json"}, false},
      {{"merges.txt"}, false},
      {{"tokenizer.json"}, false},
      {{"tokenizer_config.json"}, false},
      {{"special_tokens_map.json"}, false},
  };
}

std::vector<FileWant> HfTransformersFiles() {
  return {
      {{"config.json", "adapter_config.json"}, true},
      {{"model.safetensors.index.json", "model.safetensors", "adapter_model.safetensors"},
       true,
       {"pytorch_model.bin"}},
      {{"tokenizer.model", "tokenizer.json", "sentencepiece.bpe.model", "vocab.txt"}, false},
      {{"tokenizer_config.json"}, false},
      {{"special_tokens_map.json"}, false},
      {{"added_tokens.json"}, false},
      {{"preprocessor_config.json"}, false},
      {{"processor_config.json"}, false},
      {{"generation_config.json"}, false},
  };
}

// ---------------------------------------------------------------------------------------
// Environment.

EnvLookup ProcessEnv() {
  return [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

namespace {

// An environment value, treating an empty one as unset.
std::optional<std::string> NonEmpty(const EnvLookup& env, const char* name) {
  std::optional<std::string> v = env(name);
  if (!v || v->empty()) return std::nullopt;
  return v;
}

std::string ExpandUser(const std::string& path, const EnvLookup& env) {
  if (path == "~" || absl::StartsWith(path, "~/")) {
    std::string home = NonEmpty(env, "HOME").value_or("");
    return home + path.substr(1);
  }
  return path;
}

std::string HfHome(const EnvLookup& env) {
  if (auto v = NonEmpty(env, "HF_HOME")) return ExpandUser(*v, env);
  if (auto v = NonEmpty(env, "XDG_CACHE_HOME")) return ExpandUser(*v, env) + "/huggingface";
  return ExpandUser("~/.cache/huggingface", env);
}

bool IsTrue(const std::optional<std::string>& v) {
  if (!v) return false;
  const std::string u = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(*v));
  return u == "1" || u == "ON" || u == "YES" || u == "TRUE";
}

}  // namespace

std::string HubCacheDir(const EnvLookup& env) {
  if (auto v = NonEmpty(env, "HF_HUB_CACHE")) return ExpandUser(*v, env);
  if (auto v = NonEmpty(env, "HUGGINGFACE_HUB_CACHE")) return ExpandUser(*v, env);
  return HfHome(env) + "/hub";
}

bool OfflineFromEnv(const EnvLookup& env) {
  // Python reads `HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE`: the first one that is non-empty.
  if (auto v = NonEmpty(env, "HF_HUB_OFFLINE")) return IsTrue(v);
  return IsTrue(NonEmpty(env, "TRANSFORMERS_OFFLINE"));
}

std::string TokenFromEnv(const EnvLookup& env) {
  if (auto v = NonEmpty(env, "HF_TOKEN")) return std::string(absl::StripAsciiWhitespace(*v));
  std::string path;
  if (auto v = NonEmpty(env, "HF_TOKEN_PATH")) {
    path = ExpandUser(*v, env);
  } else {
    path = HfHome(env) + "/token";
  }
  std::ifstream in(path);
  std::string line;
  if (in && std::getline(in, line)) return std::string(absl::StripAsciiWhitespace(line));
  return "";
}

std::string EndpointFromEnv(const EnvLookup& env) {
  std::string e = NonEmpty(env, "HF_ENDPOINT").value_or("https://huggingface.co");
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

// ---------------------------------------------------------------------------------------
// Specs.

namespace {

constexpr absl::string_view kHfPrefix = "hf:";
constexpr absl::string_view kSpecForm =
    "expected hf:ORG/REPO or hf:ORG/REPO@REVISION (a branch, tag or commit sha)";

bool IsRepoPartChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

bool IsValidRepoPart(absl::string_view part) {
  if (part.empty() || part.size() > 96) return false;
  for (char c : part) {
    if (!IsRepoPartChar(c)) return false;
  }
  if (part.front() == '-' || part.front() == '.' || part.back() == '-' || part.back() == '.') {
    return false;
  }
  return !absl::StrContains(part, "--") && !absl::StrContains(part, "..");
}

}  // namespace

bool IsHfSpec(absl::string_view spec) { return absl::StartsWith(spec, kHfPrefix); }

absl::StatusOr<HfSpec> ParseHfSpec(absl::string_view spec) {
  if (!IsHfSpec(spec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model source '", internal::Sanitize(spec), "': ", kSpecForm));
  }
  absl::string_view rest = spec.substr(kHfPrefix.size());
  HfSpec out;
  const size_t at = rest.find('@');
  absl::string_view repo = rest.substr(0, at);
  if (at != absl::string_view::npos) {
    absl::string_view rev = rest.substr(at + 1);
    if (!internal::IsSafeRelativePath(rev) || absl::StrContains(rev, "@")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model source '", internal::Sanitize(spec), "': revision '",
          internal::Sanitize(rev), "' is not a valid branch, tag or commit; ", kSpecForm));
    }
    out.revision = std::string(rev);
  }
  std::vector<absl::string_view> parts = absl::StrSplit(repo, '/');
  bool ok = parts.size() == 1 || parts.size() == 2;
  for (absl::string_view p : parts) ok = ok && IsValidRepoPart(p);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model source '", internal::Sanitize(spec), "': repo id '", internal::Sanitize(repo),
        "' is not ORG/REPO (letters, digits, '-', '_', '.'); ", kSpecForm));
  }
  out.repo_id = std::string(repo);
  return out;
}

std::string RepoFolderName(absl::string_view repo_id) {
  return absl::StrCat("models--", absl::StrJoin(absl::StrSplit(repo_id, '/'), "--"));
}

// ---------------------------------------------------------------------------------------
// Internal helpers.

namespace internal {

std::string SpecName(const HfSpec& spec) {
  return absl::StrCat("hf:", spec.repo_id, "@", spec.revision);
}

namespace {
bool IsLowerHex(absl::string_view s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}
}  // namespace

bool IsCommitSha(absl::string_view s) { return IsLowerHex(s, 40); }
bool IsSha256Hex(absl::string_view s) { return IsLowerHex(s, 64); }

bool IsSafeRelativePath(absl::string_view name) {
  if (name.empty() || name.size() > 1024) return false;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '\\') return false;
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

std::string Sanitize(absl::string_view text, size_t max_len) {
  std::string out;
  for (char c : text) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
  }
  return out;
}

std::string RepoDir(const std::string& cache_dir, const std::string& repo_id) {
  return absl::StrCat(cache_dir, "/", RepoFolderName(repo_id));
}

absl::StatusOr<std::string> ReadRef(const std::string& repo_dir, const std::string& revision) {
  const std::string path = absl::StrCat(repo_dir, "/refs/", revision);
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("no ref file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string sha(absl::StripAsciiWhitespace(ss.str()));
  if (!IsCommitSha(sha)) {
    return absl::NotFoundError(absl::StrCat("ref file ", path, " holds '", Sanitize(sha, 60),
                                            "', not a commit sha"));
  }
  return sha;
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<FileWant> DefaultFilesFor(const std::function<bool(const std::string&)>& has) {
  if (has("open_clip_config.json")) return OpenClipFiles();
  return HfTransformersFiles();
}

absl::StatusOr<std::vector<std::string>> SelectFiles(
    const std::vector<FileWant>& wants, const std::function<bool(const std::string&)>& has,
    const std::string& spec_name, const std::string& where) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const FileWant& want : wants) {
    bool found = false;
    // Takes every name of `names` the repo has; with `until_found`, stops at the first.
    auto take = [&](const std::vector<std::string>& names, bool until_found) -> absl::Status {
      for (const std::string& name : names) {
        if (until_found && found) break;
        if (!IsSafeRelativePath(name)) {
          return absl::InvalidArgumentError(
              absl::StrCat(spec_name, ": requested file name '", Sanitize(name), "' is invalid"));
        }
        if (!has(name)) continue;
        found = true;
        if (seen.insert(name).second) out.push_back(name);
      }
      return absl::OkStatus();
    };
    if (absl::Status s = take(want.any_of, /*until_found=*/false); !s.ok()) return s;
    if (absl::Status s = take(want.fallback, /*until_found=*/true); !s.ok()) return s;
    if (!found && want.required) {
      std::vector<std::string> names = want.any_of;
      names.insert(names.end(), want.fallback.begin(), want.fallback.end());
      return absl::NotFoundError(absl::StrCat(
          spec_name, ": ", where, " has no ", absl::StrJoin(names, " or "),
          ", which loading the model requires; check the repo id and revision"));
    }
  }
  return out;
}

bool IsSafetensorsIndex(absl::string_view name) {
  return absl::EndsWith(name, ".safetensors.index.json");
}

absl::StatusOr<std::vector<std::string>> ShardsOfIndex(const std::string& index_path,
                                                       const std::string& index_name) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", index_path));
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("weight_map") ||
      !doc["weight_map"].is_object()) {
    return absl::InternalError(
        absl::StrCat(index_path, " is not a safetensors index (no \"weight_map\" object)"));
  }
  std::string prefix;
  const size_t slash = index_name.rfind('/');
  if (slash != std::string::npos) prefix = index_name.substr(0, slash + 1);
  std::set<std::string> seen;
  std::vector<std::string> shards;
  for (const auto& [tensor, file] : doc["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::InternalError(absl::StrCat(index_path, ": weight_map entry for '",
                                              Sanitize(tensor, 80), "' is not a file name"));
    }
    std::string name = prefix + file.get<std::string>();
    if (!IsSafeRelativePath(name)) {
      return absl::InternalError(absl::StrCat(index_path, ": weight_map names an invalid path '",
                                              Sanitize(name, 120), "'"));
    }
    if (seen.insert(name).second) shards.push_back(std::move(name));
  }
  return shards;
}

}  // namespace internal

// ---------------------------------------------------------------------------------------
// Cache-only resolution.

absl::StatusOr<std::string> ResolveFromCache(const HfSpec& spec, const std::string& cache_dir,
                                             const std::vector<FileWant>& files) {
  const std::string name = internal::SpecName(spec);
  const std::string repo_dir = internal::RepoDir(cache_dir, spec.repo_id);
  const std::string fix = absl::StrCat("download it while online (unset HF_HUB_OFFLINE), or "
                                       "run `huggingface-cli download ", spec.repo_id,
                                       " --revision ", spec.revision, "`");
  struct stat st;
  if (::stat(repo_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(name, ": not in the hub cache (no ", repo_dir,
                                            "); ", fix));
  }
  std::string sha;
  if (internal::IsCommitSha(spec.revision)) {
    sha = spec.revision;
  } else {
    absl::StatusOr<std::string> ref = internal::ReadRef(repo_dir, spec.revision);
    if (!ref.ok()) {
      return absl::NotFoundError(absl::StrCat(name, ": revision '", spec.revision,
                                              "' is not in the hub cache (",
                                              ref.status().message(), "); ", fix));
    }
    sha = *ref;
  }
  const std::string snapshot = absl::StrCat(repo_dir, "/snapshots/", sha);
  if (::stat(snapshot.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(name, ": commit ", sha,
                                            " is not in the hub cache (no ", snapshot, "); ",
                                            fix));
  }
  auto has = [&](const std::string& f) { return IsRegularFile(snapshot + "/" + f); };
  const std::vector<FileWant> wants = files.empty() ? internal::DefaultFilesFor(has) : files;
  absl::StatusOr<std::vector<std::string>> selected =
      internal::SelectFiles(wants, has, name, absl::StrCat("the cached snapshot ", snapshot));
  if (!selected.ok()) {
    return absl::Status(selected.status().code(),
                        absl::StrCat(selected.status().message(), "; ", fix));
  }
  for (const std::string& f : *selected) {
    if (!internal::IsSafetensorsIndex(f)) continue;
    absl::StatusOr<std::vector<std::string>> shards =
        internal::ShardsOfIndex(snapshot + "/" + f, f);
    if (!shards.ok()) return shards.status();
    for (const std::string& shard : *shards) {
      if (!has(shard)) {
        return absl::NotFoundError(absl::StrCat(name, ": the cached snapshot ", snapshot,
                                                " lacks shard ", shard, " named by ", f, "; ",
                                                fix));
      }
    }
  }
  return snapshot;
}

}  // namespace embedserve::sources
