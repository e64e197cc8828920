// The `openclip:ARCH/TAG` model source: open_clip's pretrained tags resolved through the
// shipped tag table to their hub repo, with only the weights file taken from the Hugging Face
// cache (downloaded if missing), then estimated and loaded with the shipped architecture.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/models/model.h"
#include "server/models/runtime_options.h"
#include "server/sources/hf_hub.h"

namespace embedserve {

// Any model source: openclip:ARCH/TAG through ResolveOpenClipPretrained, everything else
// (a directory, hf:ORG/REPO[@REV]) through sources::ResolveModelSource.
absl::StatusOr<std::string> ResolveModelSpec(const std::string& spec,
                                             const sources::SourceOptions& options = {});

// Resolves openclip:ARCH/TAG as open_clip's download_pretrained does: the tag's hub repo at
// main, open_clip_model.safetensors if the repo (or, offline, the cache) has it, else
// open_clip_pytorch_model.bin; nothing else is fetched. Returns the locator
// ("openclip:ARCH/TAG@SNAPSHOT_DIR", models/openclip/openclip_pretrained.h) that
// EstimateModelBytes and LoadModel accept in place of a directory. Errors: INVALID_ARGUMENT
// for a malformed spec, NOT_FOUND for an unknown architecture or tag (listing the known ones)
// or weights missing from the repo or cache (naming both files), and sources' errors.
absl::StatusOr<std::string> ResolveOpenClipPretrained(const std::string& spec,
                                                      const sources::SourceOptions& options = {});

// True for a locator ResolveOpenClipPretrained returned.
bool IsOpenClipPretrainedLocator(const std::string& dir);

// The memory the locator's model takes with floating tensors of `float_size` bytes.
absl::StatusOr<int64_t> EstimateOpenClipPretrained(const std::string& locator, int64_t float_size);

// Loads the locator's model (logs open_clip's QuickGELU-mismatch warning when it applies).
absl::StatusOr<std::unique_ptr<models::Model>> LoadOpenClipPretrainedLocator(
    const std::string& locator, const models::RuntimeOptions& options);

}  // namespace embedserve
