// Model sources: turns what a user names on the command line (`--model NAME=SPEC`) into a
// local directory a family loader can read.
//
// A SPEC is either a directory (returned as it is) or `hf:ORG/REPO[@REVISION]`, which is
// resolved through the Hugging Face hub cache that huggingface_hub, transformers and
// open_clip share:
//
//   $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
//     models--ORG--REPO/
//       refs/<branch-or-tag>          the commit sha the name pointed at when last seen
//       blobs/<etag>                  file contents, named by the hub's ETag (a sha256 for
//                                     LFS files, a git blob sha1 for small ones)
//       snapshots/<sha>/<file>        relative symlinks into blobs/
//
// Weights downloaded earlier by Python are used in place, never copied. Files the cache
// lacks are downloaded from $HF_ENDPOINT (Bearer $HF_TOKEN when set) into the same layout:
// resumable (`blobs/<etag>.incomplete` + Range), checked against the ETag when it is a
// sha256, then renamed into place and linked from the snapshot, so that a Python process
// later finds them too. HF_HUB_OFFLINE=1 forbids the network; then only the cache is used.
//
// Every failure is an absl::Status whose message names the repo, the file, the HTTP status
// and what to do about it; bad or hostile server responses never crash the process.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace embedserve::sources {

// ---------------------------------------------------------------------------------------
// What to fetch.

// One entry of a file list: the first name of `any_of` the repo has is fetched, and every
// further one it has too (so {"tokenizer.json", "tokenizer.model"} fetches both where both
// exist). Only where the repo has none of `any_of`, the first of `fallback` it has is fetched
// instead (a PyTorch .bin checkpoint where there is no safetensors one: never both). When
// `required` and the repo has none of either, resolution fails naming them. Names are
// repo-relative with '/' separators. A fetched `*.safetensors.index.json` also brings every
// shard its `weight_map` names, each required.
struct FileWant {
  std::vector<std::string> any_of;
  bool required = false;
  std::vector<std::string> fallback;
};

// The files the OpenCLIP loader reads: open_clip_config.json and open_clip_model.safetensors
// (else open_clip_pytorch_model.bin; required), the BPE vocabulary and tokenizer files where
// present.
std::vector<FileWant> OpenClipFiles();

// The files a Hugging Face transformers checkpoint (ColPali/PaliGemma, cross-encoders) needs:
// config.json or adapter_config.json, model.safetensors[.index.json] or
// adapter_model.safetensors (else pytorch_model.bin; required), tokenizer, preprocessor and
// processor configs where present.
std::vector<FileWant> HfTransformersFiles();

// ---------------------------------------------------------------------------------------
// Options. Every field has an "unset" value that means "take it from the environment the
// way huggingface_hub does"; SourceOptions{} therefore behaves like Python would.

// Progress of one file's download. `bytes_total` is -1 when the server did not say.
struct DownloadProgress {
  std::string repo_id;
  std::string file;
  int64_t bytes_done = 0;
  int64_t bytes_total = -1;
  double bytes_per_second = 0;  // average since this download started
  bool finished = false;        // the last report for this file
};
using ProgressCallback = std::function<void(const DownloadProgress&)>;

struct SourceOptions {
  std::string cache_dir;       // empty: HubCacheDir() from the environment
  std::optional<bool> offline; // unset: OfflineFromEnv()
  std::string endpoint;        // empty: $HF_ENDPOINT, else https://huggingface.co
  std::optional<std::string> token;  // unset: TokenFromEnv(); "" sends no token
  // Empty: chosen from the repo's files (open_clip_config.json present: OpenClipFiles(),
  // else HfTransformersFiles()).
  std::vector<FileWant> files;
  // Called at most about once per second while a file downloads and once when it ends;
  // null prints a line with bytes and rate to stderr for downloads that take over a second.
  ProgressCallback progress;
  int connect_timeout_s = 10;
  int metadata_timeout_s = 30;  // API and HEAD calls, whole request
  int stall_timeout_s = 60;     // a download receiving nothing for this long is retried
  int max_retries = 5;          // per file, after transfer errors; reset by any progress
  int retry_delay_ms = 1000;
};

// Looks up an environment variable; std::nullopt when unset. Tests substitute their own.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
EnvLookup ProcessEnv();

// $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else $HOME/.cache/huggingface/hub ('~' expanded).
std::string HubCacheDir(const EnvLookup& env = ProcessEnv());
// HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is one of 1/ON/YES/TRUE, any case.
bool OfflineFromEnv(const EnvLookup& env = ProcessEnv());
// $HF_TOKEN, else the first line of $HF_TOKEN_PATH or $HF_HOME/token (written by
// `huggingface-cli login`); "" when none.
std::string TokenFromEnv(const EnvLookup& env = ProcessEnv());
// $HF_ENDPOINT without trailing '/', else https://huggingface.co.
std::string EndpointFromEnv(const EnvLookup& env = ProcessEnv());

// ---------------------------------------------------------------------------------------
// Specs.

struct HfSpec {
  std::string repo_id;             // "ORG/REPO" (or a legacy "REPO" without owner)
  std::string revision = "main";   // branch, tag or commit sha
};

// Parses "hf:ORG/REPO[@REVISION]". INVALID_ARGUMENT with the expected form otherwise.
absl::StatusOr<HfSpec> ParseHfSpec(absl::string_view spec);
bool IsHfSpec(absl::string_view spec);

// "models--ORG--REPO": the repo's folder under the cache directory.
std::string RepoFolderName(absl::string_view repo_id);

// ---------------------------------------------------------------------------------------
// Resolution.

// Resolves `spec` to a local directory:
//  - a plain path: returned unchanged if it is a directory; NOT_FOUND otherwise;
//  - "hf:ORG/REPO[@REV]": the snapshot directory `<cache>/models--ORG--REPO/snapshots/<sha>`
//    holding every wanted file the repo has (see SourceOptions::files), downloading the
//    missing ones unless offline. Online, a branch or tag is looked up on the hub every
//    time (so an updated branch is followed); a commit sha whose snapshot already holds
//    the wanted files is answered from the cache without any request.
// Blocks for the whole download; safe to call from several threads or processes at once
// (downloads of one blob are serialized by a lock file under `<cache>/.locks/`, the one
// huggingface_hub takes). Errors:
//  - INVALID_ARGUMENT: a malformed spec;
//  - NOT_FOUND: repo, revision or required file missing (on the hub, or in the cache when
//    offline; the message names it and says how to get it);
//  - PERMISSION_DENIED / UNAUTHENTICATED: 403 / 401 from the hub (gated or private repo;
//    the message says to set HF_TOKEN or accept the licence);
//  - DATA_LOSS: a download whose sha256 is not the hub's ETag (nothing is installed);
//  - UNAVAILABLE: network failure or a 5xx with nothing usable in the cache (retry later);
//  - INTERNAL: a malformed hub response or a filesystem error.
// When the hub cannot be reached (network error, 5xx, 401/403) but the cache holds a
// complete snapshot for the revision, that snapshot is used and a warning goes to stderr,
// as huggingface_hub does.
absl::StatusOr<std::string> ResolveModelSource(const std::string& spec,
                                               const SourceOptions& options = {});

// The cache-only half of ResolveModelSource for an hf: spec: the snapshot directory for
// `spec.revision` (a commit sha, or a name in refs/) if it holds the wanted files; never
// touches the network. `files` empty: chosen from the snapshot's contents as above.
absl::StatusOr<std::string> ResolveFromCache(const HfSpec& spec, const std::string& cache_dir,
                                             const std::vector<FileWant>& files = {});

}  // namespace embedserve::sources
