// embedserve-cli: calls an embedserve server from the shell (health, models, embed, rerank,
// classify, tokenize; load, unload, reload, rescan on servers with --enable-admin). --json prints one JSON object per input; failures exit non-zero
// with the gRPC status name and message on stderr.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "client/embedserve_client.h"
#include "common/status.h"
#include "common/tensor_codec.h"

namespace embedserve::cli {
namespace {

using nlohmann::json;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s: %s\n", StatusCodeName(status.code()),
               std::string(status.message()).c_str());
  // Exit codes: 1 + the gRPC code (2..17), so scripts can tell them apart.
  return 1 + static_cast<int>(status.code());
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot read " + path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

json TensorJson(const v1::Tensor& tensor) {
  absl::StatusOr<DecodedTensor> decoded = DecodeTensor(tensor);
  json out;
  out["shape"] = std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end());
  if (decoded.ok()) out["vector"] = decoded->values;
  return out;
}

json TimingJson(const v1::Timing& t) {
  return json{{"preprocess_us", t.preprocess_us()}, {"queue_us", t.queue_us()},
              {"inference_us", t.inference_us()}, {"total_us", t.total_us()}};
}

struct Inputs {
  std::vector<std::string> texts;
  std::vector<std::string> images;
};

absl::Status AddInputs(const Inputs& inputs, google::protobuf::RepeatedPtrField<v1::Input>* out) {
  for (const std::string& text : inputs.texts) out->Add()->set_text(text);
  for (const std::string& path : inputs.images) {
    absl::StatusOr<std::string> bytes = ReadFile(path);
    if (!bytes.ok()) return bytes.status();
    out->Add()->set_image(*std::move(bytes));
  }
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  CLI::App app{"embedserve-cli: call an embedserve server"};
  app.require_subcommand(1);
  std::string target = "unix:/tmp/embedserve.sock";
  double timeout_s = 60;
  bool as_json = false;
  app.add_option("--target", target, "unix:PATH or HOST:PORT")
      ->envname("EMBEDSERVE_TARGET")->capture_default_str();
  app.add_option("--timeout", timeout_s, "Deadline per call, seconds")->capture_default_str();
  app.add_flag("--json", as_json, "Machine-readable output: one JSON object per line");
  std::string priority_name;
  app.add_option("--priority", priority_name,
                 "Scheduling class of embed, rerank and classify calls: bulk, normal or "
                 "interactive (default: the server's, normal)")
      ->envname("EMBEDSERVE_PRIORITY")->check(CLI::IsMember({"bulk", "normal", "interactive"}));
  bool wait_for_ready = false;
  app.add_flag("--wait-for-ready", wait_for_ready,
               "Wait (until --timeout) for a server that is starting or restarting, instead of "
               "failing with UNAVAILABLE at once");
  std::string token_file, tls_ca, tls_cert, tls_key, tls_server_name;
  app.add_option("--token-file", token_file, "File whose first line is the bearer token")
      ->envname("EMBEDSERVE_TOKEN_FILE");
  app.add_option("--tls-ca", tls_ca, "PEM root CA: use TLS to a TCP target")->envname("EMBEDSERVE_TLS_CA");
  app.add_option("--tls-cert", tls_cert, "PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", tls_key, "PEM client key (mutual TLS)");
  app.add_option("--tls-server-name", tls_server_name, "Name expected in the server certificate");

  std::string model;
  Inputs inputs;
  std::string health_service;
  auto* health = app.add_subcommand("health", "grpc.health.v1 Check");
  health->add_option("--service", health_service, "Service name; empty for the whole server, or a model name");

  auto* models = app.add_subcommand("models", "List the models and their state");

  auto* embed = app.add_subcommand("embed", "Embed texts and image files");
  std::string dtype = "float32";
  bool no_normalize = false;
  embed->add_option("--model,-m", model, "Model name")->required();
  embed->add_option("--text,-t", inputs.texts, "A text (repeatable)");
  embed->add_option("--image,-i", inputs.images, "An image file (repeatable)");
  embed->add_option("--dtype", dtype, "float32|float16|bfloat16 (the wire type; printed as float)")
      ->check(CLI::IsMember({"float32", "float16", "bfloat16"}));
  embed->add_flag("--no-normalize", no_normalize, "Raw (unnormalized) vectors");

  auto* rerank = app.add_subcommand("rerank", "Rank candidates against a query");
  std::string query_text, query_image;
  int top_k = 0;
  rerank->add_option("--model,-m", model, "Model name")->required();
  rerank->add_option("--query-text", query_text, "Query text");
  rerank->add_option("--query-image", query_image, "Query image file");
  rerank->add_option("--text,-t", inputs.texts, "A candidate text (repeatable)");
  rerank->add_option("--image,-i", inputs.images, "A candidate image file (repeatable)");
  rerank->add_option("--top-k", top_k, "Results to return (0: all)");
  bool sigmoid = false;
  rerank->add_flag("--sigmoid", sigmoid,
                   "Cross-encoders: map each logit through the sigmoid into (0, 1)");

  auto* classify = app.add_subcommand("classify", "Zero-shot classification over labels");
  std::vector<std::string> labels;
  std::string prompt_template;
  classify->add_option("--model,-m", model, "Model name")->required();
  classify->add_option("--image,-i", inputs.images, "An image file (repeatable)");
  classify->add_option("--text,-t", inputs.texts, "A text to classify (repeatable)");
  classify->add_option("--label,-l", labels, "A candidate label (repeatable)")->required();
  classify->add_option("--template", prompt_template, "Prompt template with {}, e.g. 'a photo of a {}.'");

  auto* tokenize = app.add_subcommand("tokenize", "Token ids of texts, as the model sees them");
  tokenize->add_option("--model,-m", model, "Model name")->required();
  tokenize->add_option("--text,-t", inputs.texts, "A text (repeatable)")->required();

  // Admin (AdminService, servers started with --enable-admin).
  std::string admin_name, admin_source;
  auto* load = app.add_subcommand("load", "Load a model (waits until it serves)");
  load->add_option("name", admin_name, "The model's name")->required();
  load->add_option("source", admin_source, "A model directory or hf:ORG/REPO[@REVISION]")->required();
  auto* unload = app.add_subcommand("unload", "Unload a model (calls in flight finish)");
  unload->add_option("name", admin_name, "The model's name")->required();
  auto* reload = app.add_subcommand("reload", "Reload a model beside the serving version, then switch");
  reload->add_option("name", admin_name, "The model's name")->required();
  reload->add_option("source", admin_source, "A new directory or hf: spec (default: the current source)");
  auto* rescan = app.add_subcommand("rescan", "Rescan the server's --model-dir now");

  CLI11_PARSE(app, argc, argv);

  client::ClientOptions options;
  options.timeout = absl::Seconds(timeout_s);
  options.wait_for_ready = wait_for_ready;
  for (auto [path, field] : {std::pair<const std::string*, std::string*>{&tls_ca, &options.tls_root_ca},
                             {&tls_cert, &options.tls_client_cert},
                             {&tls_key, &options.tls_client_key}}) {
    if (path->empty()) continue;
    absl::StatusOr<std::string> content = ReadFile(*path);
    if (!content.ok()) return Fail(content.status());
    *field = *content;
  }
  options.tls_server_name = tls_server_name;
  if (!token_file.empty()) {
    absl::StatusOr<std::string> content = ReadFile(token_file);
    if (!content.ok()) return Fail(content.status());
    options.bearer_token = content->substr(0, content->find_first_of("\r\n"));
  }
  std::unique_ptr<client::Client> client = client::Client::Create(target, options);

  if (health->parsed()) {
    auto status = client->Health(health_service);
    if (!status.ok()) return Fail(status.status());
    const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
    if (as_json) std::cout << json{{"status", name}}.dump() << "\n";
    else std::cout << name << "\n";
    return *status == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
  }
  if (models->parsed()) {
    auto response = client->ListModels();
    if (!response.ok()) return Fail(response.status());
    for (const v1::ModelInfo& m : response->models()) {
      if (as_json) {
        std::cout << json{{"name", m.name()}, {"family", m.family()},
                          {"architecture", m.architecture()},
                          {"state", v1::ModelState_Name(m.state())},
                          {"state_message", m.state_message()},
                          {"embedding_dim", m.embedding_dim()},
                          {"multi_vector", m.multi_vector()},
                          {"context_length", m.context_length()},
                          {"image_size", m.image_size()}, {"dtype", m.dtype()},
                          {"dtype_reason", m.dtype_reason()},
                          {"device", m.device()}, {"scoring", m.scoring()},
                          {"source", m.source()},
                          {"estimated_bytes", m.estimated_bytes()}}.dump() << "\n";
      } else {
        std::cout << m.name() << "\t" << v1::ModelState_Name(m.state()) << "\t" << m.family()
                  << "\t" << m.architecture() << "\tdim=" << m.embedding_dim() << "\t"
                  << m.device() << "/" << m.dtype()
                  << (m.state_message().empty() ? "" : "\t" + m.state_message()) << "\n";
      }
    }
    return 0;
  }
  if (load->parsed() || reload->parsed()) {
    absl::StatusOr<v1::ModelInfo> info;
    if (load->parsed()) {
      auto response = client->LoadModel(admin_name, admin_source);
      info = response.ok() ? absl::StatusOr<v1::ModelInfo>(response->model()) : response.status();
    } else {
      auto response = client->ReloadModel(admin_name, admin_source);
      info = response.ok() ? absl::StatusOr<v1::ModelInfo>(response->model()) : response.status();
    }
    if (!info.ok()) return Fail(info.status());
    if (as_json) {
      std::cout << json{{"name", info->name()}, {"state", v1::ModelState_Name(info->state())},
                        {"source", info->source()},
                        {"estimated_bytes", info->estimated_bytes()}}.dump() << "\n";
    } else {
      std::cout << info->name() << "\t" << v1::ModelState_Name(info->state()) << "\t"
                << info->source() << "\testimated_bytes=" << info->estimated_bytes() << "\n";
    }
    return 0;
  }
  if (unload->parsed()) {
    auto response = client->UnloadModel(admin_name);
    if (!response.ok()) return Fail(response.status());
    if (as_json) std::cout << json{{"name", admin_name}, {"unloaded", true}}.dump() << "\n";
    else std::cout << admin_name << "\tunloaded\n";
    return 0;
  }
  if (rescan->parsed()) {
    auto response = client->RescanModelDir();
    if (!response.ok()) return Fail(response.status());
    json failed = json::array();
    for (const v1::ModelFailure& f : response->failed()) {
      failed.push_back({{"name", f.name()}, {"code", f.code()}, {"message", f.message()}});
    }
    json out{{"loaded", std::vector<std::string>(response->loaded().begin(), response->loaded().end())},
             {"unloaded", std::vector<std::string>(response->unloaded().begin(), response->unloaded().end())},
             {"reloaded", std::vector<std::string>(response->reloaded().begin(), response->reloaded().end())},
             {"failed", failed}};
    std::cout << (as_json ? out.dump() : out.dump(1)) << "\n";
    return response->failed_size() == 0 ? 0 : 1;
  }
  v1::Priority priority = v1::PRIORITY_UNSPECIFIED;
  if (priority_name == "bulk") priority = v1::PRIORITY_BULK;
  if (priority_name == "normal") priority = v1::PRIORITY_NORMAL;
  if (priority_name == "interactive") priority = v1::PRIORITY_INTERACTIVE;
  if (embed->parsed()) {
    v1::EmbedRequest request;
    request.set_model(model);
    request.mutable_options()->set_priority(priority);
    if (no_normalize) request.mutable_options()->set_normalize(false);
    if (dtype == "float16") request.mutable_options()->set_dtype(v1::DTYPE_FLOAT16);
    if (dtype == "bfloat16") request.mutable_options()->set_dtype(v1::DTYPE_BFLOAT16);
    absl::Status added = AddInputs(inputs, request.mutable_inputs());
    if (!added.ok()) return Fail(added);
    auto response = client->Embed(request);
    if (!response.ok()) return Fail(response.status());
    for (int i = 0; i < response->embeddings_size(); ++i) {
      const v1::Embedding& e = response->embeddings(i);
      json row = TensorJson(e.vector());
      row["index"] = i;
      row["truncated"] = e.truncated();
      row["token_count"] = e.token_count();
      if (as_json) {
        std::cout << row.dump() << "\n";
      } else {
        const auto& v = row["vector"];
        std::cout << "[" << i << "] shape=" << row["shape"].dump() << " ";
        for (size_t k = 0; k < std::min<size_t>(v.size(), 4); ++k) std::cout << v[k].get<float>() << " ";
        std::cout << "...\n";
      }
    }
    if (!as_json) std::cout << "timing " << TimingJson(response->timing()).dump() << "\n";
    return 0;
  }
  if (rerank->parsed()) {
    v1::RerankRequest request;
    request.set_model(model);
    request.set_priority(priority);
    if (!query_image.empty()) {
      absl::StatusOr<std::string> bytes = ReadFile(query_image);
      if (!bytes.ok()) return Fail(bytes.status());
      request.mutable_query()->set_image(*bytes);
    } else {
      request.mutable_query()->set_text(query_text);
    }
    absl::Status added = AddInputs(inputs, request.mutable_candidates());
    if (!added.ok()) return Fail(added);
    if (top_k > 0) request.set_top_k(top_k);
    if (sigmoid) request.set_sigmoid(true);
    auto response = client->Rerank(request);
    if (!response.ok()) return Fail(response.status());
    for (const v1::RerankResult& r : response->results()) {
      if (as_json) {
        std::cout << json{{"index", r.index()}, {"score", r.score()}, {"truncated", r.truncated()}}
                         .dump()
                  << "\n";
      } else {
        std::cout << r.index() << "\t" << r.score() << (r.truncated() ? "\ttruncated" : "") << "\n";
      }
    }
    return 0;
  }
  if (classify->parsed()) {
    v1::ClassifyRequest request;
    request.set_model(model);
    request.set_priority(priority);
    for (const std::string& label : labels) request.add_labels(label);
    request.set_prompt_template(prompt_template);
    absl::Status added = AddInputs(inputs, request.mutable_inputs());
    if (!added.ok()) return Fail(added);
    auto response = client->Classify(request);
    if (!response.ok()) return Fail(response.status());
    for (int i = 0; i < response->classifications_size(); ++i) {
      json scores = json::array();
      for (const v1::LabelScore& s : response->classifications(i).scores()) {
        scores.push_back({{"index", s.index()}, {"label", s.label()},
                          {"probability", s.probability()}, {"logit", s.logit()}});
      }
      if (as_json) {
        std::cout << json{{"index", i}, {"scores", scores}}.dump() << "\n";
      } else {
        std::cout << "[" << i << "]";
        for (const auto& s : scores) std::cout << " " << s["label"].get<std::string>() << "=" << s["probability"].get<float>();
        std::cout << "\n";
      }
    }
    return 0;
  }
  if (tokenize->parsed()) {
    v1::TokenizeRequest request;
    request.set_model(model);
    for (const std::string& text : inputs.texts) request.add_texts(text);
    auto response = client->Tokenize(request);
    if (!response.ok()) return Fail(response.status());
    for (int i = 0; i < response->texts_size(); ++i) {
      const v1::TokenizedText& t = response->texts(i);
      json row{{"index", i}, {"ids", std::vector<int>(t.ids().begin(), t.ids().end())},
               {"tokens", std::vector<std::string>(t.tokens().begin(), t.tokens().end())},
               {"truncated", t.truncated()}};
      std::cout << (as_json ? row.dump() : row.dump(1)) << "\n";
    }
    return 0;
  }
  return 2;
}

}  // namespace
}  // namespace embedserve::cli

int main(int argc, char** argv) { return embedserve::cli::Run(argc, argv); }
