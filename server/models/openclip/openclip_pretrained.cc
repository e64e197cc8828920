// The shipped tables of OpenCLIP architectures and pretrained tags (facts from open_clip
// 3.3.0, see NOTES.md), tag lookup and the openclip:ARCH/TAG spec.
#include "server/models/openclip/openclip_pretrained.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace embedserve::models::openclip {
namespace {

constexpr std::array<float, 3> kOpenAiMean{0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> kOpenAiStd{0.26862954f, 0.26130258f, 0.27577711f};
constexpr std::array<float, 3> kInceptionMean{0.5f, 0.5f, 0.5f};
constexpr std::array<float, 3> kInceptionStd{0.5f, 0.5f, 0.5f};

constexpr absl::string_view kQuickSuffix = "-quickgelu";

// model_configs/<name>.json; fields the file leaves out take CLIPVisionCfg/CLIPTextCfg's
// defaults (head_width 64, mlp_ratio 4.0).
struct ArchRow {
  const char* name;
  int embed_dim;
  VisionConfig vision;  // image_size, patch_size, width, layers, head_width, mlp_ratio
  TextConfig text;      // context_length, vocab_size, width, heads, layers, mlp_ratio
};

const ArchRow kArchitectures[] = {
    {"ViT-B-32", 512, {224, 32, 768, 12, 64, 4.0}, {77, 49408, 512, 8, 12, 4.0}},
    {"ViT-B-16", 512, {224, 16, 768, 12, 64, 4.0}, {77, 49408, 512, 8, 12, 4.0}},
    {"ViT-L-14", 768, {224, 14, 1024, 24, 64, 4.0}, {77, 49408, 768, 12, 12, 4.0}},
    {"ViT-L-14-336", 768, {336, 14, 1024, 24, 64, 4.0}, {77, 49408, 768, 12, 12, 4.0}},
    {"ViT-H-14", 1024, {224, 14, 1280, 32, 80, 4.0}, {77, 49408, 1024, 16, 24, 4.0}},
    {"ViT-bigG-14", 1280, {224, 14, 1664, 48, 104, 4.9231}, {77, 49408, 1280, 20, 32, 4.0}},
};

// pretrained.py's _PRETRAINED entries for the architectures above. Every one is a _pcfg
// (OpenAI mean/std, bicubic, shortest) unless its row says otherwise.
struct TagRow {
  const char* architecture;
  const char* tag;
  const char* hf_hub;
  bool quick_gelu;
  std::array<float, 3> mean;
  std::array<float, 3> std;
  const char* interpolation;
  const char* resize_mode;
};

#define OPENAI_PP kOpenAiMean, kOpenAiStd, "bicubic", "shortest"
const TagRow kTags[] = {
    // ViT-B-32 (_VITB32)
    {"ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai", true, OPENAI_PP},
    {"ViT-B-32", "laion400m_e31", "timm/vit_base_patch32_clip_224.laion400m_e31", true, OPENAI_PP},
    {"ViT-B-32", "laion400m_e32", "timm/vit_base_patch32_clip_224.laion400m_e32", true, OPENAI_PP},
    {"ViT-B-32", "laion2b_e16", "timm/vit_base_patch32_clip_224.laion2b_e16", false, OPENAI_PP},
    {"ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", false, OPENAI_PP},
    {"ViT-B-32", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K", false, OPENAI_PP},
    {"ViT-B-32", "datacomp_m_s128m_b4k", "laion/CLIP-ViT-B-32-DataComp.M-s128M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_m_clip_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.clip-s128M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_m_laion_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.laion-s128M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_m_image_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.image-s128M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_m_text_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.text-s128M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_m_basic_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.basic-s128M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_m_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M-s128M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "datacomp_s_s13m_b4k", "laion/CLIP-ViT-B-32-DataComp.S-s13M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_s_clip_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.clip-s13M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_s_laion_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.laion-s13M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_s_image_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.image-s13M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_s_text_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.text-s13M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_s_basic_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.basic-s13M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "commonpool_s_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S-s13M-b4K", false, OPENAI_PP},
    {"ViT-B-32", "metaclip_400m", "timm/vit_base_patch32_clip_224.metaclip_400m", true, OPENAI_PP},
    {"ViT-B-32", "metaclip_fullcc", "timm/vit_base_patch32_clip_224.metaclip_2pt5b", true, OPENAI_PP},
    // ViT-B-16 (_VITB16)
    {"ViT-B-16", "openai", "timm/vit_base_patch16_clip_224.openai", true, OPENAI_PP},
    {"ViT-B-16", "laion400m_e31", "timm/vit_base_patch16_clip_224.laion400m_e31", false, OPENAI_PP},
    {"ViT-B-16", "laion400m_e32", "timm/vit_base_patch16_clip_224.laion400m_e32", false, OPENAI_PP},
    {"ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", false, OPENAI_PP},
    {"ViT-B-16", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K", false, OPENAI_PP},
    {"ViT-B-16", "datacomp_l_s1b_b8k", "laion/CLIP-ViT-B-16-DataComp.L-s1B-b8K", false, OPENAI_PP},
    {"ViT-B-16", "commonpool_l_clip_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.clip-s1B-b8K", false, OPENAI_PP},
    {"ViT-B-16", "commonpool_l_laion_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.laion-s1B-b8K", false, OPENAI_PP},
    {"ViT-B-16", "commonpool_l_image_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.image-s1B-b8K", false, OPENAI_PP},
    {"ViT-B-16", "commonpool_l_text_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.text-s1B-b8K", false, OPENAI_PP},
    {"ViT-B-16", "commonpool_l_basic_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.basic-s1B-b8K", false, OPENAI_PP},
    {"ViT-B-16", "commonpool_l_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L-s1B-b8K", false, OPENAI_PP},
    {"ViT-B-16", "dfn2b", "apple/DFN2B-CLIP-ViT-B-16", true, OPENAI_PP},
    {"ViT-B-16", "metaclip_400m", "timm/vit_base_patch16_clip_224.metaclip_400m", true, OPENAI_PP},
    {"ViT-B-16", "metaclip_fullcc", "timm/vit_base_patch16_clip_224.metaclip_2pt5b", true, OPENAI_PP},
    // ViT-L-14 (_VITL14)
    {"ViT-L-14", "openai", "timm/vit_large_patch14_clip_224.openai", true, OPENAI_PP},
    {"ViT-L-14", "laion400m_e31", "timm/vit_large_patch14_clip_224.laion400m_e31", false, OPENAI_PP},
    {"ViT-L-14", "laion400m_e32", "timm/vit_large_patch14_clip_224.laion400m_e32", false, OPENAI_PP},
    // The one tag here with Inception mean/std.
    {"ViT-L-14", "laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", false,
     kInceptionMean, kInceptionStd, "bicubic", "shortest"},
    {"ViT-L-14", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", false, OPENAI_PP},
    {"ViT-L-14", "commonpool_xl_clip_s13b_b90k", "laion/CLIP-ViT-L-14-CommonPool.XL.clip-s13B-b90K", false, OPENAI_PP},
    {"ViT-L-14", "commonpool_xl_laion_s13b_b90k", "laion/CLIP-ViT-L-14-CommonPool.XL.laion-s13B-b90K", false, OPENAI_PP},
    {"ViT-L-14", "commonpool_xl_s13b_b90k", "laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K", false, OPENAI_PP},
    {"ViT-L-14", "metaclip_400m", "timm/vit_large_patch14_clip_224.metaclip_400m", true, OPENAI_PP},
    {"ViT-L-14", "metaclip_fullcc", "timm/vit_large_patch14_clip_224.metaclip_2pt5b", true, OPENAI_PP},
    {"ViT-L-14", "dfn2b", "apple/DFN2B-CLIP-ViT-L-14", true, OPENAI_PP},
    {"ViT-L-14", "dfn2b_s39b", "apple/DFN2B-CLIP-ViT-L-14-39B", false, OPENAI_PP},
    // ViT-L-14-336 (_VITL14_336)
    {"ViT-L-14-336", "openai", "timm/vit_large_patch14_clip_336.openai", true, OPENAI_PP},
    // ViT-H-14 (_VITH14)
    {"ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", false, OPENAI_PP},
    {"ViT-H-14", "metaclip_fullcc", "timm/vit_huge_patch14_clip_224.metaclip_2pt5b", true, OPENAI_PP},
    {"ViT-H-14", "metaclip_altogether", "timm/vit_huge_patch14_clip_224.metaclip_altogether", false, OPENAI_PP},
    // Squash resize: the native preprocessing refuses it at load (shortest side only).
    {"ViT-H-14", "dfn5b", "apple/DFN5B-CLIP-ViT-H-14", true, kOpenAiMean, kOpenAiStd, "bicubic",
     "squash"},
    // ViT-bigG-14 (_VITbigG14)
    {"ViT-bigG-14", "laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", false, OPENAI_PP},
    {"ViT-bigG-14", "metaclip_fullcc", "timm/vit_gigantic_patch14_clip_224.metaclip_2pt5b", true, OPENAI_PP},
};
#undef OPENAI_PP

bool EndsWithQuick(absl::string_view name) {
  return name.size() > kQuickSuffix.size() && absl::EndsWith(name, kQuickSuffix);
}

PretrainedTag FromRow(const TagRow& row, const std::string& architecture) {
  PretrainedTag t;
  t.architecture = architecture;
  t.tag = row.tag;
  t.hf_hub = row.hf_hub;
  t.trained_quick_gelu = row.quick_gelu;
  t.mean = row.mean;
  t.std = row.std;
  t.interpolation = row.interpolation;
  t.resize_mode = row.resize_mode;
  return t;
}

}  // namespace

std::vector<std::string> ShippedArchitectureNames() {
  std::vector<std::string> names;
  for (const ArchRow& a : kArchitectures) {
    names.push_back(a.name);
    names.push_back(absl::StrCat(a.name, kQuickSuffix));
  }
  return names;
}

absl::StatusOr<OpenClipConfig> ShippedArchitecture(const std::string& name) {
  const bool quick = EndsWithQuick(name);
  const absl::string_view base =
      quick ? absl::string_view(name).substr(0, name.size() - kQuickSuffix.size())
            : absl::string_view(name);
  for (const ArchRow& a : kArchitectures) {
    if (base != a.name) continue;
    OpenClipConfig c;
    c.embed_dim = a.embed_dim;
    c.quick_gelu = quick;  // only the -quickgelu configs set it; the default is false
    c.vision = a.vision;
    c.text = a.text;
    return c;
  }
  return absl::NotFoundError(absl::StrCat("unknown OpenCLIP architecture '", name,
                                          "' (known: ", absl::StrJoin(ShippedArchitectureNames(), ", "),
                                          ")"));
}

const std::vector<PretrainedTag>& ShippedTags() {
  static const std::vector<PretrainedTag>* const tags = [] {
    auto* out = new std::vector<PretrainedTag>();
    for (const ArchRow& a : kArchitectures) {
      for (const TagRow& row : kTags) {
        if (absl::string_view(row.architecture) == a.name) out->push_back(FromRow(row, a.name));
      }
      // pretrained.py copies every tag trained with QuickGELU under "<arch>-quickgelu".
      for (const TagRow& row : kTags) {
        if (absl::string_view(row.architecture) == a.name && row.quick_gelu) {
          out->push_back(FromRow(row, absl::StrCat(a.name, kQuickSuffix)));
        }
      }
    }
    return out;
  }();
  return *tags;
}

std::vector<std::string> TagsOf(const std::string& architecture) {
  std::vector<std::string> out;
  for (const PretrainedTag& t : ShippedTags()) {
    if (t.architecture == architecture) out.push_back(t.tag);
  }
  return out;
}

std::string CleanTag(absl::string_view tag) {
  std::string out = absl::AsciiStrToLower(tag);
  for (char& ch : out) {
    if (ch == '-') ch = '_';
  }
  return out;
}

absl::StatusOr<PretrainedTag> LookupTag(const std::string& architecture, const std::string& tag) {
  if (absl::Status known = ShippedArchitecture(architecture).status(); !known.ok()) return known;
  const std::string clean = CleanTag(tag);
  for (const PretrainedTag& t : ShippedTags()) {
    if (t.architecture == architecture && t.tag == clean) return t;
  }
  const std::vector<std::string> tags = TagsOf(architecture);
  std::string hint;
  if (EndsWithQuick(architecture)) {
    hint = absl::StrCat("; the -quickgelu spelling has only the tags trained with QuickGELU, "
                        "try ", architecture.substr(0, architecture.size() - kQuickSuffix.size()),
                        "/", tag);
  }
  return absl::NotFoundError(absl::StrCat(
      "OpenCLIP architecture ", architecture, " has no pretrained tag '", tag, "' (known: ",
      tags.empty() ? "none" : absl::StrJoin(tags, ", "), ")", hint));
}

bool IsPretrainedSpec(absl::string_view spec) {
  return absl::StartsWith(spec, kPretrainedScheme);
}

absl::StatusOr<PretrainedSpec> ParsePretrainedSpec(absl::string_view spec) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model source '", spec, "': ", why,
        "; expected openclip:ARCH/TAG, e.g. openclip:ViT-B-32/openai or "
        "openclip:ViT-B-32-quickgelu/openai"));
  };
  if (!IsPretrainedSpec(spec)) return bad("not an openclip: spec");
  absl::string_view rest = spec.substr(kPretrainedScheme.size());
  const size_t slash = rest.find('/');
  if (slash == absl::string_view::npos) return bad("no '/' between architecture and tag");
  PretrainedSpec out;
  out.architecture = std::string(rest.substr(0, slash));
  out.tag = std::string(rest.substr(slash + 1));
  if (out.architecture.empty()) return bad("empty architecture");
  if (out.tag.empty()) return bad("empty tag");
  for (const std::string* part : {&out.architecture, &out.tag}) {
    for (char ch : *part) {
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')) {
        return bad(absl::StrCat("unexpected character '", std::string(1, ch), "' in '", *part,
                                "'"));
      }
    }
  }
  return out;
}

absl::StatusOr<ResolvedPretrained> ResolvePretrained(const PretrainedSpec& spec) {
  absl::StatusOr<OpenClipConfig> config = ShippedArchitecture(spec.architecture);
  if (!config.ok()) return config.status();
  absl::StatusOr<PretrainedTag> tag = LookupTag(spec.architecture, spec.tag);
  if (!tag.ok()) return tag.status();
  ResolvedPretrained r;
  r.tag = *std::move(tag);
  r.config = *std::move(config);
  // The tag's preprocessing overlays the defaults; the size stays the tower's.
  r.config.preprocess.mean = r.tag.mean;
  r.config.preprocess.std = r.tag.std;
  r.activation = r.config.quick_gelu ? "quick_gelu" : "gelu";
  if (r.config.quick_gelu != r.tag.trained_quick_gelu) {
    const std::string base = EndsWithQuick(spec.architecture)
                                 ? spec.architecture.substr(0, spec.architecture.size() -
                                                                   kQuickSuffix.size())
                                 : spec.architecture;
    const std::string trained = r.tag.trained_quick_gelu
                                    ? absl::StrCat(base, kQuickSuffix)
                                    : base;
    r.warning = absl::StrCat(
        "QuickGELU mismatch between the model config (quick_gelu=",
        r.config.quick_gelu ? "True" : "False", ") and pretrained tag '", r.tag.tag,
        "' (quick_gelu=", r.tag.trained_quick_gelu ? "True" : "False",
        "); serving ", r.activation, " as open_clip does for ", spec.architecture,
        ", which reproduces vectors made by open_clip.create_model_and_transforms('",
        spec.architecture, "', pretrained='", r.tag.tag, "'); the activation the weights were "
        "trained with is openclip:", trained, "/", r.tag.tag,
        " (better zero-shot quality, but different vectors: re-embed before switching)");
  }
  return r;
}

std::string PretrainedLocator(const PretrainedSpec& spec, const std::string& dir) {
  return absl::StrCat(kPretrainedScheme, spec.architecture, "/", spec.tag, "@", dir);
}

bool ParsePretrainedLocator(absl::string_view locator, ParsedLocator* out) {
  if (!IsPretrainedSpec(locator)) return false;
  const size_t at = locator.find('@');
  if (at == absl::string_view::npos || at + 1 >= locator.size() || locator[at + 1] != '/') {
    return false;
  }
  absl::StatusOr<PretrainedSpec> spec = ParsePretrainedSpec(locator.substr(0, at));
  if (!spec.ok()) return false;
  out->spec = *std::move(spec);
  out->dir = std::string(locator.substr(at + 1));
  return true;
}

}  // namespace embedserve::models::openclip
