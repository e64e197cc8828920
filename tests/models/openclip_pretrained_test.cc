// The shipped OpenCLIP tables (server/models/openclip/openclip_pretrained.h): every
// (architecture, tag) resolves to a hub repo with its tag's preprocessing, the activation
// follows the architecture name as in open_clip, and unknown names list the known ones.
#include <set>

#include <catch2/catch.hpp>

#include "server/models/openclip/openclip_pretrained.h"

using namespace embedserve::models::openclip;

namespace {

constexpr std::array<float, 3> kOpenAiMean{0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> kOpenAiStd{0.26862954f, 0.26130258f, 0.27577711f};

bool IsQuick(const std::string& arch) {
  return arch.size() > 10 && arch.compare(arch.size() - 10, 10, "-quickgelu") == 0;
}

ResolvedPretrained MustResolve(const std::string& arch, const std::string& tag) {
  auto r = ResolvePretrained({arch, tag});
  INFO(arch << "/" << tag << ": " << r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

}  // namespace

TEST_CASE("every shipped (architecture, tag) resolves to a hub repo with the tag's preprocessing") {
  std::set<std::pair<std::string, std::string>> seen;
  for (const PretrainedTag& t : ShippedTags()) {
    INFO(t.architecture << "/" << t.tag);
    CHECK(seen.insert({t.architecture, t.tag}).second);  // no duplicates
    ResolvedPretrained r = MustResolve(t.architecture, t.tag);
    CHECK(r.tag.hf_hub == t.hf_hub);
    CHECK(t.hf_hub.find('/') != std::string::npos);
    CHECK(t.hf_hub.back() != '/');
    CHECK(r.config.preprocess.mean == t.mean);
    CHECK(r.config.preprocess.std == t.std);
    CHECK(t.interpolation == "bicubic");
    CHECK((t.resize_mode == "shortest" || t.resize_mode == "squash"));
    // The architecture name decides the activation; a mismatch with training is warned.
    CHECK(r.config.quick_gelu == IsQuick(t.architecture));
    CHECK(r.activation == (IsQuick(t.architecture) ? "quick_gelu" : "gelu"));
    CHECK(r.warning.empty() == (r.config.quick_gelu == t.trained_quick_gelu));
    // A -quickgelu architecture carries only tags trained with QuickGELU (pretrained.py).
    if (IsQuick(t.architecture)) CHECK(t.trained_quick_gelu);
  }
  CHECK(seen.size() > 60);
}

TEST_CASE("the issue's tags and architectures are shipped") {
  for (const std::string arch : {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336",
                                 "ViT-H-14", "ViT-bigG-14"}) {
    INFO(arch);
    CHECK(ShippedArchitecture(arch).ok());
    CHECK(ShippedArchitecture(arch + "-quickgelu").ok());
    CHECK_FALSE(TagsOf(arch).empty());
  }
  struct Want { const char* arch; const char* tag; const char* hub; bool trained_quick; };
  const Want wants[] = {
      {"ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai", true},
      {"ViT-B-32-quickgelu", "openai", "timm/vit_base_patch32_clip_224.openai", true},
      {"ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", false},
      {"ViT-B-32-quickgelu", "laion400m_e32", "timm/vit_base_patch32_clip_224.laion400m_e32", true},
      {"ViT-B-32", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K", false},
      {"ViT-B-16", "openai", "timm/vit_base_patch16_clip_224.openai", true},
      {"ViT-B-16", "laion400m_e32", "timm/vit_base_patch16_clip_224.laion400m_e32", false},
      {"ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", false},
      {"ViT-L-14", "openai", "timm/vit_large_patch14_clip_224.openai", true},
      {"ViT-L-14", "laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", false},
      {"ViT-L-14", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", false},
      {"ViT-L-14-336", "openai", "timm/vit_large_patch14_clip_336.openai", true},
      {"ViT-L-14-336-quickgelu", "openai", "timm/vit_large_patch14_clip_336.openai", true},
      {"ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", false},
      {"ViT-bigG-14", "laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", false},
  };
  for (const Want& w : wants) {
    ResolvedPretrained r = MustResolve(w.arch, w.tag);
    CHECK(r.tag.hf_hub == w.hub);
    CHECK(r.tag.trained_quick_gelu == w.trained_quick);
  }
  // OpenAI mean/std everywhere but ViT-L-14 laion2b_s32b_b82k (Inception: 0.5).
  CHECK(MustResolve("ViT-B-32", "openai").config.preprocess.mean == kOpenAiMean);
  CHECK(MustResolve("ViT-B-32", "openai").config.preprocess.std == kOpenAiStd);
  const ResolvedPretrained inception = MustResolve("ViT-L-14", "laion2b_s32b_b82k");
  CHECK(inception.config.preprocess.mean == std::array<float, 3>{0.5f, 0.5f, 0.5f});
  CHECK(inception.config.preprocess.std == std::array<float, 3>{0.5f, 0.5f, 0.5f});
  CHECK(MustResolve("ViT-L-14-336", "openai").config.vision.image_size == 336);
}

TEST_CASE("ViT-B-32/openai serves GELU with open_clip's warning; -quickgelu serves QuickGELU") {
  const ResolvedPretrained gelu = MustResolve("ViT-B-32", "openai");
  CHECK(gelu.activation == "gelu");
  CHECK_FALSE(gelu.config.quick_gelu);
  CHECK_THAT(gelu.warning, Catch::Contains("QuickGELU mismatch"));
  CHECK_THAT(gelu.warning, Catch::Contains("(quick_gelu=False)"));
  CHECK_THAT(gelu.warning, Catch::Contains("'openai' (quick_gelu=True)"));
  CHECK_THAT(gelu.warning, Catch::Contains("openclip:ViT-B-32-quickgelu/openai"));
  CHECK_THAT(gelu.warning, Catch::Contains("re-embed"));
  const ResolvedPretrained quick = MustResolve("ViT-B-32-quickgelu", "openai");
  CHECK(quick.activation == "quick_gelu");
  CHECK(quick.warning.empty());
  // Same weights either way.
  CHECK(quick.tag.hf_hub == gelu.tag.hf_hub);
  // A tag trained with GELU: no warning.
  CHECK(MustResolve("ViT-B-32", "laion2b_s34b_b79k").warning.empty());
}

TEST_CASE("tags are normalized as open_clip does") {
  CHECK(CleanTag("LAION2B-s34b-B79K") == "laion2b_s34b_b79k");
  CHECK(MustResolve("ViT-B-32", "OpenAI").tag.tag == "openai");
  CHECK(MustResolve("ViT-B-32", "laion2b-s34b-b79k").tag.hf_hub ==
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K");
}

TEST_CASE("unknown architectures and tags fail listing the known ones") {
  auto arch = ResolvePretrained({"ViT-X-99", "openai"});
  REQUIRE(arch.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(arch.status().message()), Catch::Contains("ViT-X-99"));
  CHECK_THAT(std::string(arch.status().message()), Catch::Contains("ViT-L-14-336-quickgelu"));
  CHECK_THAT(std::string(arch.status().message()), Catch::Contains("ViT-bigG-14"));

  auto tag = ResolvePretrained({"ViT-B-32", "laion5b"});
  REQUIRE(tag.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(tag.status().message()), Catch::Contains("'laion5b'"));
  CHECK_THAT(std::string(tag.status().message()), Catch::Contains("laion2b_s34b_b79k"));
  CHECK_THAT(std::string(tag.status().message()), Catch::Contains("openai"));

  // open_clip's -quickgelu tables hold only the QuickGELU-trained tags.
  auto quick = ResolvePretrained({"ViT-B-32-quickgelu", "laion2b_s34b_b79k"});
  REQUIRE(quick.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(quick.status().message()), Catch::Contains("try ViT-B-32/laion2b_s34b_b79k"));
  // ViT-H-14-quickgelu: only metaclip_fullcc and dfn5b.
  CHECK(TagsOf("ViT-H-14-quickgelu") == std::vector<std::string>{"metaclip_fullcc", "dfn5b"});
}

TEST_CASE("openclip: specs and locators parse; malformed ones name the expected form") {
  auto spec = ParsePretrainedSpec("openclip:ViT-B-32/openai");
  REQUIRE(spec.ok());
  CHECK(spec->architecture == "ViT-B-32");
  CHECK(spec->tag == "openai");
  for (const char* bad : {"openclip:", "openclip:ViT-B-32", "openclip:/openai", "openclip:ViT-B-32/",
                          "openclip:ViT-B-32/openai/x", "openclip:ViT-B-32/openai@main",
                          "hf:ViT-B-32/openai"}) {
    INFO(bad);
    auto parsed = ParsePretrainedSpec(bad);
    REQUIRE(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(parsed.status().message()), Catch::Contains("openclip:ARCH/TAG"));
  }
  const std::string locator = PretrainedLocator(*spec, "/cache/models--a--b/snapshots/abc");
  CHECK(locator == "openclip:ViT-B-32/openai@/cache/models--a--b/snapshots/abc");
  ParsedLocator parsed;
  REQUIRE(ParsePretrainedLocator(locator, &parsed));
  CHECK(parsed.spec.architecture == "ViT-B-32");
  CHECK(parsed.spec.tag == "openai");
  CHECK(parsed.dir == "/cache/models--a--b/snapshots/abc");
  CHECK_FALSE(ParsePretrainedLocator("openclip:ViT-B-32/openai", &parsed));
  CHECK_FALSE(ParsePretrainedLocator("/some/dir", &parsed));
  CHECK_FALSE(ParsePretrainedLocator("openclip:ViT-B-32/openai@relative", &parsed));
}
