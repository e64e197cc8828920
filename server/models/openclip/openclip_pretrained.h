// OpenCLIP's named architectures and pretrained tags, as data we ship (read from open_clip's
// source; NOTES.md beside this file says which version and where each fact comes from), and
// the `openclip:ARCH/TAG` spec built on them. Torch-free.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/models/openclip/openclip_config.h"

namespace embedserve::models::openclip {

// The open_clip release the tables were read from.
inline constexpr const char* kOpenClipTablesVersion = "open_clip 3.3.0";

// One pretrained tag of one architecture: where open_clip downloads its weights and how it
// preprocesses images for it.
struct PretrainedTag {
  std::string architecture;  // "ViT-B-32", "ViT-B-32-quickgelu"
  std::string tag;           // "openai", "laion2b_s34b_b79k" (open_clip's spelling)
  std::string hf_hub;        // the Hugging Face repo id the weights come from
  // The activation the weights were trained with (the tag's quick_gelu). open_clip does not
  // apply it: the architecture's config decides, and a mismatch is only warned about.
  bool trained_quick_gelu = false;
  std::array<float, 3> mean{};
  std::array<float, 3> std{};
  std::string interpolation;  // "bicubic", "bilinear"
  std::string resize_mode;    // "shortest", "squash", "longest"
};

// The shipped architecture names, in table order ("ViT-B-32", "ViT-B-32-quickgelu", ...).
std::vector<std::string> ShippedArchitectureNames();

// The model config open_clip builds for `name` (model_configs/<name>.json with the
// dataclass defaults filled in); NOT_FOUND listing the shipped names otherwise.
absl::StatusOr<OpenClipConfig> ShippedArchitecture(const std::string& name);

// Every shipped (architecture, tag) pair, in table order; the -quickgelu architectures carry
// the tags of their base whose weights were trained with QuickGELU, as open_clip derives them.
const std::vector<PretrainedTag>& ShippedTags();

// The tags of one architecture (empty if it has none or is unknown).
std::vector<std::string> TagsOf(const std::string& architecture);

// open_clip's tag normalization: lower case, '-' becomes '_'.
std::string CleanTag(absl::string_view tag);

// The tag `tag` (normalized as open_clip does) of `architecture`. NOT_FOUND naming the
// architecture and listing the known ones, or naming the tag and listing that architecture's.
absl::StatusOr<PretrainedTag> LookupTag(const std::string& architecture, const std::string& tag);

// A parsed `openclip:ARCH/TAG`.
struct PretrainedSpec {
  std::string architecture;
  std::string tag;  // as written
};

inline constexpr absl::string_view kPretrainedScheme = "openclip:";
bool IsPretrainedSpec(absl::string_view spec);
// INVALID_ARGUMENT naming the expected form for anything but "openclip:ARCH/TAG".
absl::StatusOr<PretrainedSpec> ParsePretrainedSpec(absl::string_view spec);

// What create_model_and_transforms(ARCH, pretrained=TAG) builds: the architecture's config
// (its activation included) with the tag's preprocessing, the tag itself, and open_clip's
// QuickGELU-mismatch warning when the two disagree (empty otherwise).
struct ResolvedPretrained {
  PretrainedTag tag;
  OpenClipConfig config;
  std::string activation;  // "gelu" or "quick_gelu": what the model computes
  std::string warning;
};
absl::StatusOr<ResolvedPretrained> ResolvePretrained(const PretrainedSpec& spec);

// The weight files open_clip looks for in the tag's repo, in its order of preference.
inline constexpr const char* kPretrainedSafetensors = "open_clip_model.safetensors";
inline constexpr const char* kPretrainedBin = "open_clip_pytorch_model.bin";

// The resolved form of an openclip: spec, carried from resolution to the memory estimate and
// the loader in place of a directory: "openclip:ARCH/TAG@DIR", where DIR is the absolute
// snapshot directory holding the tag's weights file.
std::string PretrainedLocator(const PretrainedSpec& spec, const std::string& dir);
struct ParsedLocator {
  PretrainedSpec spec;
  std::string dir;
};
// True (and `out` filled) for a string PretrainedLocator made.
bool ParsePretrainedLocator(absl::string_view locator, ParsedLocator* out);

}  // namespace embedserve::models::openclip
