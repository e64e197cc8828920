// openclip:ARCH/TAG end to end in process: a replica of the tag's hub repo in a fake Hugging
// Face cache filled the way open_clip fills it (only open_clip_model.safetensors), resolved
// offline, estimated, loaded with the shipped ViT-B-32 (GELU) and ViT-B-32-quickgelu, each
// against OpenCLIP's graph in Debian's PyTorch (tests/tools/openclip_reference.py).
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "server/model_loader.h"
#include "server/models/openclip/openclip_pretrained.h"
#include "server/models/openclip/openclip_random_checkpoint.h"
#include "server/openclip_source.h"
#include "server/pipeline/pipeline.h"
#include "server/rpc/model_service.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
namespace oc = embedserve::models::openclip;
using embedserve::models::ImageInput;
using embedserve::models::Model;
using embedserve::models::RuntimeOptions;
using embedserve::testing::Cosine;
using embedserve::testing::Slurp;

namespace {

constexpr const char* kRepo = "timm/vit_base_patch32_clip_224.openai";
constexpr const char* kSha = "f1e2d3c4b5a6978812345678901234567890abcd";
// What the hub sends as the ETag of an LFS file (a sha256); the cache names the blob by it.
constexpr const char* kEtag = "5f0e2b1c9d8a7b6c5f0e2b1c9d8a7b6c5f0e2b1c9d8a7b6c5f0e2b1c9d8a7b6c";

struct Replica {
  std::string root;
  std::string cache;
  std::string weights;  // the snapshot's weights file, for the Python reference
  ~Replica() {  // ~300 MB: not left behind
    std::error_code ec;
    if (!root.empty()) fs::remove_all(root, ec);
  }
};

// Full-size random ViT-B-32 weights (F16 on disk), placed as huggingface_hub places a file
// that open_clip's download_pretrained_from_hf asked for: blobs/<etag>, a relative symlink
// from snapshots/<sha>/, refs/main. No open_clip_config.json: open_clip never fetches it for
// a tag.
const Replica& HubReplica() {
  static const Replica replica = [] {
    Replica r;
    r.root = embedserve::testing::FreshTempDir("openclip_pretrained");
    r.cache = r.root + "/hub";
    const std::string written = r.root + "/written";
    auto config = oc::ShippedArchitecture("ViT-B-32");
    REQUIRE(config.ok());
    REQUIRE(oc::WriteRandomCheckpoint(*config, written, "F16", 3).ok());
    const fs::path repo = fs::path(r.cache) / "models--timm--vit_base_patch32_clip_224.openai";
    fs::create_directories(repo / "blobs");
    fs::create_directories(repo / "refs");
    fs::create_directories(repo / "snapshots" / kSha);
    fs::rename(fs::path(written) / "open_clip_model.safetensors", repo / "blobs" / kEtag);
    fs::create_symlink(std::string("../../blobs/") + kEtag,
                       repo / "snapshots" / kSha / "open_clip_model.safetensors");
    std::ofstream(repo / "refs" / "main") << kSha;
    fs::remove_all(written);
    r.weights = (repo / "snapshots" / kSha / "open_clip_model.safetensors").string();
    return r;
  }();
  return replica;
}

// The process environment, as a server started by a user would see it: offline.
void UseReplicaOffline() {
  setenv("HF_HUB_CACHE", HubReplica().cache.c_str(), 1);
  setenv("HF_HUB_OFFLINE", "1", 1);
}

RuntimeOptions Float32() {
  RuntimeOptions options;
  options.device = embedserve::testing::TestDevice();
  options.dtype = "float32";
  return options;
}

std::unique_ptr<Model> LoadSpec(const std::string& spec) {
  auto locator = embedserve::ResolveModelSpec(spec);
  INFO(spec << ": " << locator.status().ToString());
  REQUIRE(locator.ok());
  auto model = embedserve::LoadModel(*locator, Float32());
  INFO(model.status().ToString());
  REQUIRE(model.ok());
  return *std::move(model);
}

ImageInput Pixels(const Model& model) {
  auto in = model.PrepareImage(
      Slurp(std::string(EMBEDSERVE_TEST_DATA) + "/openclip-reference/images/photo_800x600.jpg"), {});
  INFO(in.status().ToString());
  REQUIRE(in.ok());
  return *std::move(in);
}

std::vector<float> EmbedImage(Model& model, const ImageInput& input) {
  const ImageInput* ptr = &input;
  auto out = model.EmbedImages({&ptr, 1});
  REQUIRE(out.ok());
  return (*out)[0].values;
}

// OpenCLIP's image tower in Debian's PyTorch on the same pixels and weights.
std::vector<double> Reference(const ImageInput& input, const std::string& activation) {
  const std::string work = embedserve::testing::FreshTempDir("openclip_reference_" + activation);
  {
    std::ofstream out(work + "/pixels.f32", std::ios::binary);
    out.write(reinterpret_cast<const char*>(input.pixels.data()),
              static_cast<std::streamsize>(input.pixels.size() * sizeof(float)));
  }
  const std::string script = std::string(EMBEDSERVE_SOURCE_DIR) + "/tests/tools/openclip_reference.py";
  const std::string cmd = "/usr/bin/python3 " + script + " " + HubReplica().weights + " " + work +
                          "/pixels.f32 ViT-B-32 " + activation + " > " + work + "/out.json 2> " +
                          work + "/log.txt";
  INFO("the reference needs /usr/bin/python3 with torch and numpy (Debian python3-torch)");
  const int rc = std::system(cmd.c_str());
  INFO("openclip_reference.py exited with " << rc << ":\n" << Slurp(work + "/log.txt"));
  REQUIRE(rc == 0);
  const nlohmann::json out = nlohmann::json::parse(Slurp(work + "/out.json"));
  fs::remove_all(work);
  return out.at(0).get<std::vector<double>>();
}

template <typename A, typename B>
double MaxDiff(const std::vector<A>& a, const std::vector<B>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return worst;
}

}  // namespace

TEST_CASE("openclip:ViT-B-32/openai loads offline from a cache open_clip filled, as GELU") {
  UseReplicaOffline();
  auto locator = embedserve::ResolveModelSpec("openclip:ViT-B-32/openai");
  REQUIRE(locator.ok());
  const std::string snapshot =
      HubReplica().cache + "/models--timm--vit_base_patch32_clip_224.openai/snapshots/" + kSha;
  CHECK(*locator == std::string("openclip:ViT-B-32/openai@") + snapshot);
  // The estimate comes from the shipped config (ViT-B-32: 151,277,313 parameters).
  auto bytes = embedserve::EstimateModelBytes(*locator, "float32");
  REQUIRE(bytes.ok());
  CHECK(*bytes == 151277313LL * 4);

  auto model = embedserve::LoadModel(*locator, Float32());
  INFO(model.status().ToString());
  REQUIRE(model.ok());
  const auto& d = (*model)->description();
  CHECK(d.family == "openclip");
  CHECK(d.architecture == "ViT-B-32");
  CHECK(d.activation == "gelu");
  CHECK(d.embedding_dim == 512);
  CHECK(d.image_size == 224);
  CHECK(d.resolved_source == std::string(kRepo) + "@" + kSha + "/open_clip_model.safetensors");

  // ModelInfo: the activation, and the source with its resolved origin.
  embedserve::pipeline::ModelSnapshot snap;
  snap.name = "clip";
  snap.source = "openclip:ViT-B-32/openai";
  snap.state = embedserve::pipeline::ModelState::kReady;
  snap.description = d;
  embedserve::v1::ModelInfo info;
  embedserve::rpc::ToModelInfo(snap, &info);
  CHECK(info.activation() == "gelu");
  CHECK(info.source() == std::string("openclip:ViT-B-32/openai (") + kRepo + "@" + kSha +
                             "/open_clip_model.safetensors)");
  // Nothing was added to the cache (no config file, nothing downloaded).
  CHECK_FALSE(fs::exists(snapshot + "/open_clip_config.json"));
}

TEST_CASE("GELU and QuickGELU each match OpenCLIP's graph in PyTorch, and differ") {
  UseReplicaOffline();
  std::vector<float> gelu_vec, quick_vec;
  std::vector<double> gelu_ref, quick_ref;
  {
    auto gelu = LoadSpec("openclip:ViT-B-32/openai");
    CHECK(gelu->description().activation == "gelu");
    const ImageInput pixels = Pixels(*gelu);
    gelu_vec = EmbedImage(*gelu, pixels);
    gelu_ref = Reference(pixels, "gelu");
  }
  {
    auto quick = LoadSpec("openclip:ViT-B-32-quickgelu/openai");
    CHECK(quick->description().activation == "quick_gelu");
    CHECK(quick->description().architecture == "ViT-B-32-quickgelu");
    const ImageInput pixels = Pixels(*quick);
    quick_vec = EmbedImage(*quick, pixels);
    quick_ref = Reference(pixels, "quick_gelu");
  }
  REQUIRE(gelu_vec.size() == 512);
  REQUIRE(gelu_ref.size() == 512);
  REQUIRE(quick_vec.size() == 512);
  REQUIRE(quick_ref.size() == 512);
  // The activation moves the vector by `apart`; each native vector is within a small
  // fraction of that of its own reference (float32 rounding), and far from the other one.
  const double apart = MaxDiff(gelu_ref, quick_ref);
  const double gelu_err = MaxDiff(gelu_vec, gelu_ref), quick_err = MaxDiff(quick_vec, quick_ref);
  INFO("GELU vs QuickGELU reference: " << apart << "; native GELU error " << gelu_err
       << ", native QuickGELU error " << quick_err << "; cosines " << Cosine(gelu_vec, gelu_ref)
       << " " << Cosine(quick_vec, quick_ref) << " " << Cosine(gelu_vec, quick_vec));
  CHECK(Cosine(gelu_vec, gelu_ref) >= 0.99999);
  CHECK(Cosine(quick_vec, quick_ref) >= 0.99999);
  CHECK(gelu_err <= apart / 50);
  CHECK(quick_err <= apart / 50);
  CHECK(MaxDiff(gelu_vec, quick_ref) >= apart / 2);
  CHECK(MaxDiff(quick_vec, gelu_ref) >= apart / 2);
  // Same weights, different activation: different vectors.
  CHECK(gelu_vec != quick_vec);
}

TEST_CASE("openclip: resolution errors name the tag, the repo and the files") {
  UseReplicaOffline();
  // Known tag whose repo is not cached: offline, both weight files are named.
  auto missing = embedserve::ResolveModelSpec("openclip:ViT-B-16/openai");
  REQUIRE(missing.status().code() == absl::StatusCode::kNotFound);
  const std::string m(missing.status().message());
  CHECK_THAT(m, Catch::Contains("timm/vit_base_patch16_clip_224.openai"));
  CHECK_THAT(m, Catch::Contains("open_clip_model.safetensors"));
  CHECK_THAT(m, Catch::Contains("open_clip_pytorch_model.bin"));

  auto tag = embedserve::ResolveModelSpec("openclip:ViT-B-32/nope");
  REQUIRE(tag.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(tag.status().message()), Catch::Contains("laion2b_s34b_b79k"));

  auto malformed = embedserve::ResolveModelSpec("openclip:ViT-B-32");
  CHECK(malformed.status().code() == absl::StatusCode::kInvalidArgument);

  // A tag whose preprocessing the native code cannot run fails at load, naming it.
  const std::string fake = embedserve::testing::FreshTempDir("openclip_dfn5b");
  auto squash = embedserve::LoadModel("openclip:ViT-H-14/dfn5b@" + fake, Float32());
  REQUIRE(squash.status().code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(std::string(squash.status().message()), Catch::Contains("squash"));
  fs::remove_all(fake);
}
