// Helpers shared by the cache-only half (hf_cache.cc) and the downloading half (hf_hub.cc)
// of the hub resolver. Internal to server/sources.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/sources/hf_hub.h"

namespace embedserve::sources::internal {

// "hf:ORG/REPO@REV" as the user wrote it, for messages.
std::string SpecName(const HfSpec& spec);

// 40 lower-case hex digits: a full git commit sha.
bool IsCommitSha(absl::string_view s);
// 64 lower-case hex digits: what the hub sends as the ETag of an LFS file.
bool IsSha256Hex(absl::string_view s);

// A repo-relative file name safe to join under snapshots/<sha>/: '/'-separated, no empty,
// "." or ".." component, no backslash or control character.
bool IsSafeRelativePath(absl::string_view name);

// Server-provided text made fit for an error message: control characters replaced and the
// length capped.
std::string Sanitize(absl::string_view text, size_t max_len = 300);

// <cache>/models--ORG--REPO
std::string RepoDir(const std::string& cache_dir, const std::string& repo_id);

// The commit sha refs/<revision> holds, or NOT_FOUND naming the ref file.
absl::StatusOr<std::string> ReadRef(const std::string& repo_dir, const std::string& revision);

// True when `path` names an existing regular file (symlinks followed).
bool IsRegularFile(const std::string& path);

// Picks the file list from the repo's contents when the caller gave none.
std::vector<FileWant> DefaultFilesFor(const std::function<bool(const std::string&)>& has);

// Expands `wants` against `has` into the names to fetch, in order. NOT_FOUND for a
// required entry the repo lacks, naming it and `where`.
absl::StatusOr<std::vector<std::string>> SelectFiles(
    const std::vector<FileWant>& wants, const std::function<bool(const std::string&)>& has,
    const std::string& spec_name, const std::string& where);

// The shard file names the `weight_map` of a safetensors index (a JSON file at
// `index_path`) refers to, relative to the index's own folder in the repo
// (`index_name`'s directory). INTERNAL when the index is unreadable or malformed.
absl::StatusOr<std::vector<std::string>> ShardsOfIndex(const std::string& index_path,
                                                       const std::string& index_name);

// True for "*.safetensors.index.json".
bool IsSafetensorsIndex(absl::string_view name);

}  // namespace embedserve::sources::internal
