// embedserve: the daemon's entry point. Parses flags (command line, EMBEDSERVE_* environment
// variables, or a config file), starts the listeners, loads and warms the models, serves,
// and drains gracefully on SIGTERM/SIGINT.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#if defined(__GLIBC__)
#include <malloc.h>  // malloc_trim: glibc keeps freed heap pages; macOS's allocator does not
#endif

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <algorithm>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include <google/protobuf/stubs/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "server/http/gateway.h"
#include "server/http/metrics_endpoint.h"
#include "server/metrics/device_memory.h"
#include "server/metrics/metrics.h"
#include "server/model_loader.h"
#include "server/openclip_source.h"
#include "server/models/colpali/colpali_config.h"
#include "server/models/cpu_features.h"
#include "server/sources/hf_hub.h"
#include "server/pipeline/pipeline.h"
#include "server/lifecycle/memory_budget.h"
#include "server/lifecycle/model_manager.h"
#include "server/rpc/admin_service.h"
#include "server/rpc/embed_service.h"
#include "server/rpc/model_service.h"
#include "server/rpc/server.h"

namespace embedserve {
namespace {

struct Flags {
  std::vector<std::string> listen = {"unix:/tmp/embedserve.sock", "127.0.0.1:50051"};
  std::string socket_mode = "0660";
  std::string socket_group;
  std::vector<std::string> models;
  std::vector<std::string> colpali_prompts;  // PROFILE or NAME=PROFILE
  std::string device = "auto";
  std::string dtype = "float32";
  int threads = 0;
  int blas_threads = 0;
  int preprocess_threads = 0;
  int preprocess_queue = 4096;
  int max_batch_size = 32;
  int max_queue_delay_us = 2000;
  double batch_wait_fraction = 0.25;
  double time_slice_ms = 50;
  double priority_aging_ms = 1000;
  double priority_hold_ms = 1000;
  int queue_capacity = 1024;
  int max_batch_tokens = 8192;
  int max_message_bytes = 64 << 20;
  int max_inputs = 1024;
  int64_t max_text_bytes = 1 << 20;
  int max_labels = 1000;
  int64_t max_image_pixels = 64LL * 1024 * 1024;
  int64_t max_image_bytes = 32LL * 1024 * 1024;
  std::string image_decode = "exact";
  int stream_window = 8;
  double drain_timeout_s = 30;
  bool reflection = true;
  bool access_log = true;
  int max_concurrent_per_client = 0;
  std::string metrics_listen;
  std::vector<std::string> http_listen;
  int http_max_connections = 128;
  double http_idle_timeout_s = 5;
  double http_read_timeout_s = 30;
  int64_t http_max_body_bytes = 0;  // 0: twice --max-message-bytes
  std::string auth_token_file;
  std::string tls_cert, tls_key, tls_client_ca;
  bool continue_on_model_failure = false;
  bool allow_slow_bfloat16 = false;
  bool enable_admin = false;
  std::string model_dir;
  double model_dir_poll_s = 0;
  int64_t memory_budget_mb = -1;
  std::string log_level = "info";
};

// How long the process may take to exit after the drain before it is ended anyway.
constexpr absl::Duration kExitGrace = absl::Seconds(10);

// SIGTERM/SIGINT reach the watcher thread through a pipe. A handler, not sigwait alone:
// libraries (OpenBLAS) start threads before main() can block the signals, and a signal
// delivered to one of them would otherwise kill the process.
int g_signal_pipe[2] = {-1, -1};

void OnTerminate(int signal_number) {
  const unsigned char byte = static_cast<unsigned char>(signal_number);
  ssize_t ignored = write(g_signal_pipe[1], &byte, 1);
  (void)ignored;
}

// protobuf's own log lines, as our structured events. A request with a string that is not
// UTF-8 makes protobuf log an error naming the field; the access log has that call already,
// and a client could send thousands: it goes to the debug level. Anything else protobuf says
// is a warning or an error; the message is cut to a bounded length.
void LogProtobufMessage(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  const bool client_input = message.find("invalid UTF-8") != std::string::npos;
  const LogLevel ours = client_input ? LogLevel::kDebug
                        : level >= google::protobuf::LOGLEVEL_ERROR ? LogLevel::kError
                                                                    : LogLevel::kWarning;
  if (!LogEnabled(ours)) return;
  LogEvent(ours, "protobuf",
           absl::StrCat("source=", LogQuote(absl::StrCat(filename, ":", line)),
                        " message=", LogQuote(Abbreviate(message, 512))));
}

int Run(int argc, char** argv) {
  google::protobuf::SetLogHandler(&LogProtobufMessage);
  // glibc gives every thread that allocates its own arena (up to 8 per core): with gRPC's,
  // the preprocessing pool's and the executor's threads, freed memory stays scattered over
  // them and RSS creeps up under a long mixed load (soak_bench: +5.2% over 10 minutes). A few
  // arenas bound that; MALLOC_ARENA_MAX in the environment still wins.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 4);
  Flags f;
  CLI::App app{
      "embedserve: one process owns the accelerator and the models (OpenCLIP, ColPali) and "
      "serves embeddings, reranking and zero-shot classification over gRPC.\nEvery flag can "
      "also be set by the environment variable shown (EMBEDSERVE_*) or in a TOML/INI file "
      "given with --config."};
  app.set_config("--config", "", "Read flags from this TOML/INI file", false);
  app.add_option("--listen", f.listen,
                 "Listen addresses: unix:PATH or HOST:PORT, repeatable (TCP binds only where "
                 "told; use 127.0.0.1 to stay local)")
      ->envname("EMBEDSERVE_LISTEN")->delimiter(',')->capture_default_str();
  app.add_option("--socket-mode", f.socket_mode, "Permissions of unix sockets (octal)")
      ->envname("EMBEDSERVE_SOCKET_MODE")->capture_default_str();
  app.add_option("--socket-group", f.socket_group, "Group owning unix sockets (default: the process's group)")
      ->envname("EMBEDSERVE_SOCKET_GROUP");
  app.add_option("--model", f.models, "A model to serve: NAME=DIRECTORY, NAME=hf:ORG/REPO[@REVISION] (Hugging Face cache, downloaded if missing) or NAME=openclip:ARCH/TAG (open_clip's pretrained tag: the shipped ARCH config, only the weights from the tag's hub repo), repeatable")
      ->envname("EMBEDSERVE_MODEL")->delimiter(',');
  app.add_option("--colpali-prompt", f.colpali_prompts,
                 "ColPali prompt profile, PROFILE for every ColPali model or NAME=PROFILE for one "
                 "(repeatable): transformers, colpali-engine (the newest), colpali-engine-X.Y.Z. "
                 "Default by checkpoint: transformers for transformers' -hf checkpoints, the newest "
                 "colpali-engine construction for colpali-engine's (adapters, -merged, bases)")
      ->envname("EMBEDSERVE_COLPALI_PROMPT")->delimiter(',');
  app.add_option("--device", f.device, "auto|cpu|cuda[:N]|mps (auto: CUDA, then MPS, then CPU)")
      ->envname("EMBEDSERVE_DEVICE")->capture_default_str();
  app.add_option("--dtype", f.dtype,
                 "Serving dtype: float32|bfloat16|float16|int8|auto (auto: bfloat16 on CUDA "
                 "compute capability 8+, else float16; float16 on MPS; on CPU bfloat16 where the "
                 "CPU runs it natively, else float32). float32 gives OpenCLIP's vectors exactly. "
                 "int8 (CPU only, opt-in): Linear weights int8, activations float32 (dynamic "
                 "quantization in oneDNN)")
      ->envname("EMBEDSERVE_DTYPE")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16", "int8", "auto"}))
      ->capture_default_str();
  app.add_flag("--allow-slow-bfloat16", f.allow_slow_bfloat16,
               "Serve --dtype bfloat16 even on a CPU without native bfloat16 (AVX512_BF16 or "
               "AMX), where it is a slow fallback (refused otherwise)")
      ->envname("EMBEDSERVE_ALLOW_SLOW_BFLOAT16");
  app.add_option("--threads", f.threads, "Torch intra-op threads for the device executor (0: measured default: 1 for float32, all cores for bfloat16 and int8)")
      ->envname("EMBEDSERVE_THREADS")->check(CLI::Range(0, 1024))->capture_default_str();
  app.add_option("--blas-threads", f.blas_threads, "OpenBLAS pool threads, used by float32 on CPU (0: measured default: all cores for float32, 1 for bfloat16 and int8)")
      ->envname("EMBEDSERVE_BLAS_THREADS")->check(CLI::Range(0, 1024))->capture_default_str();
  app.add_option("--preprocess-threads", f.preprocess_threads, "CPU threads decoding images and tokenizing (0: one per core)")
      ->envname("EMBEDSERVE_PREPROCESS_THREADS")->check(CLI::Range(0, 1024))->capture_default_str();
  app.add_option("--preprocess-queue", f.preprocess_queue, "Most preprocessing tasks waiting before calls are refused")
      ->envname("EMBEDSERVE_PREPROCESS_QUEUE")->check(CLI::Range(1, 1 << 24))->capture_default_str();
  app.add_option("--max-batch-size", f.max_batch_size, "Most items in one forward")
      ->envname("EMBEDSERVE_MAX_BATCH_SIZE")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--batch-wait-fraction", f.batch_wait_fraction,
                 "While more items for a batch are still being decoded/tokenized, a partial batch may wait for them up to this fraction of the last forward's time (0: off)")
      ->envname("EMBEDSERVE_BATCH_WAIT_FRACTION")->check(CLI::Range(0.0, 10.0))->capture_default_str();
  app.add_option("--max-queue-delay-us", f.max_queue_delay_us, "How long an item may wait for its batch to fill")
      ->envname("EMBEDSERVE_MAX_QUEUE_DELAY_US")->check(CLI::Range(0, 10000000))->capture_default_str();
  app.add_option("--queue-capacity", f.queue_capacity, "Most items waiting per model and modality; beyond it RESOURCE_EXHAUSTED")
      ->envname("EMBEDSERVE_QUEUE_CAPACITY")->check(CLI::Range(1, 1 << 24))->capture_default_str();
  app.add_option("--max-batch-tokens", f.max_batch_tokens, "Most padded text (or pair) tokens per batch (0: no budget)")
      ->envname("EMBEDSERVE_MAX_BATCH_TOKENS")->check(CLI::Range(0, 1 << 30))->capture_default_str();
  app.add_option("--max-message-bytes", f.max_message_bytes, "Largest request or response message")
      ->envname("EMBEDSERVE_MAX_MESSAGE_BYTES")->check(CLI::Range(1024, 1 << 30))->capture_default_str();
  app.add_option("--max-inputs", f.max_inputs, "Most inputs (or candidates, or texts) per call")
      ->envname("EMBEDSERVE_MAX_INPUTS")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--max-text-bytes", f.max_text_bytes, "Largest single text")
      ->envname("EMBEDSERVE_MAX_TEXT_BYTES")->check(CLI::Range(int64_t{1}, int64_t{1} << 30))->capture_default_str();
  app.add_option("--max-labels", f.max_labels, "Most Classify labels per call")
      ->envname("EMBEDSERVE_MAX_LABELS")->check(CLI::Range(2, 1 << 20))->capture_default_str();
  app.add_option("--max-image-pixels", f.max_image_pixels, "Largest image (width x height), checked before decoding")
      ->envname("EMBEDSERVE_MAX_IMAGE_PIXELS")->check(CLI::Range(int64_t{1}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--max-image-bytes", f.max_image_bytes, "Largest encoded image")
      ->envname("EMBEDSERVE_MAX_IMAGE_BYTES")->check(CLI::Range(int64_t{1}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--image-decode", f.image_decode, "exact: decode like Pillow (OpenCLIP's pixels); fast (opt-in): a JPEG at least 4x the model's input side is decoded at 1/2, 1/4 or 1/8 scale in libjpeg's DCT domain, keeping 2x the input side (not bit-identical to Pillow)")
      ->envname("EMBEDSERVE_IMAGE_DECODE")->check(CLI::IsMember({"exact", "fast"}))->capture_default_str();
  app.add_option("--stream-window", f.stream_window, "EmbedStream messages in flight per stream")
      ->envname("EMBEDSERVE_STREAM_WINDOW")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--time-slice-ms", f.time_slice_ms,
                 "While models share the device, each batch is sized to run within this "
                 "(forwards cannot be interrupted); 0: full batches, shared by forward time only")
      ->envname("EMBEDSERVE_TIME_SLICE_MS")->check(CLI::Range(0.0, 60000.0))->capture_default_str();
  app.add_option("--priority-aging-ms", f.priority_aging_ms,
                 "A lower priority class (bulk < normal < interactive) whose batch is ready but "
                 "has not been served for this long goes first, so it never starves")
      ->envname("EMBEDSERVE_PRIORITY_AGING_MS")->check(CLI::Range(1.0, 3600000.0))->capture_default_str();
  app.add_option("--priority-hold-ms", f.priority_hold_ms,
                 "For this long after a higher priority class last ran, lower classes' batches "
                 "are sized to its forward time, so its next call waits little")
      ->envname("EMBEDSERVE_PRIORITY_HOLD_MS")->check(CLI::Range(0.0, 3600000.0))->capture_default_str();
  app.add_option("--drain-timeout-s", f.drain_timeout_s, "On SIGTERM/SIGINT, how long in-flight calls may finish")
      ->envname("EMBEDSERVE_DRAIN_TIMEOUT_S")->check(CLI::Range(0.0, 3600.0))->capture_default_str();
  app.add_flag("--reflection,!--no-reflection", f.reflection, "Serve gRPC server reflection")
      ->envname("EMBEDSERVE_REFLECTION")->capture_default_str();
  app.add_flag("--access-log,!--no-access-log", f.access_log, "Log one line per call (info level)")
      ->envname("EMBEDSERVE_ACCESS_LOG")->capture_default_str();
  app.add_option("--max-concurrent-per-client", f.max_concurrent_per_client,
                 "Calls in flight per client (x-embedserve-client header, else peer); 0: no limit")
      ->envname("EMBEDSERVE_MAX_CONCURRENT_PER_CLIENT")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  app.add_option("--metrics-listen", f.metrics_listen,
                 "Serve Prometheus metrics at http://HOST:PORT/metrics (off when empty)")
      ->envname("EMBEDSERVE_METRICS_LISTEN");
  app.add_option("--http-listen", f.http_listen,
                 "Serve the HTTP API (OpenAI /v1/embeddings, /v1/rerank, /v1/models, /health, "
                 "/metrics) on HOST:PORT or unix:PATH; repeatable (off when not given)")
      ->envname("EMBEDSERVE_HTTP_LISTEN");
  app.add_option("--http-max-connections", f.http_max_connections,
                 "HTTP connections served at once (as many more wait accepted)")
      ->envname("EMBEDSERVE_HTTP_MAX_CONNECTIONS")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--http-idle-timeout-s", f.http_idle_timeout_s,
                 "Close an HTTP connection idle this long (before a request or between two)")
      ->envname("EMBEDSERVE_HTTP_IDLE_TIMEOUT_S")->check(CLI::Range(0.1, 3600.0))->capture_default_str();
  app.add_option("--http-read-timeout-s", f.http_read_timeout_s,
                 "A whole HTTP request (head and body) must arrive within this")
      ->envname("EMBEDSERVE_HTTP_READ_TIMEOUT_S")->check(CLI::Range(0.1, 3600.0))->capture_default_str();
  app.add_option("--http-max-body-bytes", f.http_max_body_bytes,
                 "Largest HTTP request body (0: twice --max-message-bytes, for base64 and JSON)")
      ->envname("EMBEDSERVE_HTTP_MAX_BODY_BYTES")->check(CLI::Range(int64_t{0}, int64_t{1} << 32))
      ->capture_default_str();
  app.add_option("--auth-token-file", f.auth_token_file,
                 "Require 'authorization: Bearer TOKEN' on every method but health; one token per line")
      ->envname("EMBEDSERVE_AUTH_TOKEN_FILE");
  app.add_option("--tls-cert", f.tls_cert, "PEM certificate chain for TCP listeners (enables TLS)")
      ->envname("EMBEDSERVE_TLS_CERT");
  app.add_option("--tls-key", f.tls_key, "PEM private key for --tls-cert")->envname("EMBEDSERVE_TLS_KEY");
  app.add_option("--tls-client-ca", f.tls_client_ca, "PEM CA bundle: require and verify client certificates (mutual TLS)")
      ->envname("EMBEDSERVE_TLS_CLIENT_CA");
  app.add_flag("--continue-on-model-failure", f.continue_on_model_failure,
               "Serve the other models if one fails to load (it is reported FAILED)")
      ->envname("EMBEDSERVE_CONTINUE_ON_MODEL_FAILURE");
  app.add_flag("--enable-admin", f.enable_admin,
               "Serve embedserve.v1.AdminService (load, unload, reload models, rescan "
               "--model-dir). Needs the token when --auth-token-file is set; without a token, "
               "enable it only on a unix socket with a restrictive --socket-mode")
      ->envname("EMBEDSERVE_ENABLE_ADMIN");
  app.add_option("--model-dir", f.model_dir,
                 "Serve every subdirectory of DIR that holds a model, under its directory name")
      ->envname("EMBEDSERVE_MODEL_DIR");
  app.add_option("--model-dir-poll-s", f.model_dir_poll_s,
                 "Rescan --model-dir this often (added directories load, removed ones unload, "
                 "changed ones reload); 0: only at start and on AdminService.RescanModelDir")
      ->envname("EMBEDSERVE_MODEL_DIR_POLL_S")->check(CLI::Range(0.0, 86400.0))->capture_default_str();
  app.add_option("--memory-budget-mb", f.memory_budget_mb,
                 "Memory the loaded models' weights may take (estimated from their tensors); a "
                 "load beyond it is refused. -1: CPU: MemAvailable minus a margin, CUDA: free "
                 "device memory; 0: no limit")
      ->envname("EMBEDSERVE_MEMORY_BUDGET_MB")->check(CLI::Range(int64_t{-1}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--log-level", f.log_level, "debug|info|warning|error")
      ->envname("EMBEDSERVE_LOG_LEVEL")->check(CLI::IsMember({"debug", "info", "warning", "error"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  LogLevel level;
  if (ParseLogLevel(f.log_level, &level)) SetLogLevel(level);

  if (pipe(g_signal_pipe) != 0) {
    std::perror("embedserve: pipe");
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnTerminate;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  struct ModelArg { std::string name, dir; };
  std::vector<ModelArg> model_args;
  for (const std::string& spec : f.models) {
    std::vector<std::string> parts = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      std::fprintf(stderr, "--model: expected NAME=DIRECTORY or NAME=hf:ORG/REPO[@REVISION], got '%s'\n", spec.c_str());
      return 2;
    }
    model_args.push_back({parts[0], parts[1]});
  }
  std::string colpali_prompt_all;
  std::map<std::string, std::string> colpali_prompt_by_name;
  for (const std::string& spec : f.colpali_prompts) {
    std::vector<std::string> parts = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    const std::string& profile = parts.back();
    if (absl::Status s = models::colpali::ParsePromptProfile(profile).status(); !s.ok()) {
      std::fprintf(stderr, "--colpali-prompt: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    if (parts.size() == 2) {
      colpali_prompt_by_name[parts[0]] = profile;
    } else {
      colpali_prompt_all = profile;
    }
  }
  int socket_mode = 0;
  try {
    socket_mode = std::stoi(f.socket_mode, nullptr, 8);
  } catch (...) {
    socket_mode = -1;
  }
  if (socket_mode < 0 || socket_mode > 0777) {
    std::fprintf(stderr, "--socket-mode: expected an octal mode like 0660, got '%s'\n",
                 f.socket_mode.c_str());
    return 2;
  }

  pipeline::PipelineOptions options;
  options.preprocess_threads = f.preprocess_threads > 0
      ? f.preprocess_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.preprocess_queue = f.preprocess_queue;
  options.executor.time_slice = absl::Microseconds(static_cast<int64_t>(f.time_slice_ms * 1000));
  options.executor.priority_aging =
      absl::Microseconds(static_cast<int64_t>(f.priority_aging_ms * 1000));
  options.executor.priority_hold =
      absl::Microseconds(static_cast<int64_t>(f.priority_hold_ms * 1000));
  options.image_limits.max_pixels = f.max_image_pixels;
  options.image_limits.max_bytes = f.max_image_bytes;
  options.image_limits.jpeg = f.image_decode == "fast" ? image::JpegDecode::kFastDownscale : image::JpegDecode::kExact;
  for (pipeline::BatchPolicy* policy :
       {&options.text_policy, &options.image_policy, &options.pair_policy}) {
    policy->max_batch_size = f.max_batch_size;
    policy->max_queue_delay = absl::Microseconds(f.max_queue_delay_us);
    policy->incoming_wait_fraction = f.batch_wait_fraction;
    policy->queue_capacity = f.queue_capacity;
  }
  options.text_policy.max_batch_tokens = f.max_batch_tokens;
  options.pair_policy.max_batch_tokens = f.max_batch_tokens;
  pipeline::Pipeline pipeline(options);
  for (const ModelArg& m : model_args) pipeline.AddLoading(m.name, m.dir);

  models::RuntimeOptions settings;
  settings.device = ResolveDevice(f.device);
  settings.dtype = f.dtype;
  settings.allow_slow_bfloat16 = f.allow_slow_bfloat16;
  {
    const models::CpuFeatures& cpu = models::HostCpuFeatures();
    LogEvent(LogLevel::kInfo, "cpu",
             absl::StrCat("model=", LogQuote(cpu.model_name), " features=", LogQuote(cpu.Summary()),
                          " bfloat16=", cpu.NativeBfloat16() ? "native" : "not_native"));
  }
  settings.torch_threads = f.threads;
  settings.blas_threads = f.blas_threads;
  lifecycle::ModelHooks hooks;
  // A plain directory passes through; hf:ORG/REPO[@REV] is found in (or downloaded into)
  // the Hugging Face hub cache.
  hooks.resolve = [](const std::string& spec) { return ResolveModelSpec(spec); };
  // EstimateModelBytes detects the family itself (its error when `dir` is no family's).
  hooks.estimate = [dtype = f.dtype, device = settings.device](const std::string& dir) {
    return EstimateModelBytes(dir, dtype, device);
  };
  hooks.load = [settings](const std::string& dir) { return LoadModel(dir, settings); };
  // Per-model options (the ColPali prompt profile) by the model's name.
  hooks.load_named = [settings, colpali_prompt_all, colpali_prompt_by_name](
                         const std::string& name, const std::string& dir) {
    models::RuntimeOptions options = settings;
    auto it = colpali_prompt_by_name.find(name);
    options.colpali_prompt_profile = it != colpali_prompt_by_name.end() ? it->second : colpali_prompt_all;
    return LoadModel(dir, options);
  };
  hooks.is_model_dir = [](const std::string& dir) { return DetectFamily(dir).ok(); };
  const int64_t budget_bytes = f.memory_budget_mb < 0 ? lifecycle::DefaultMemoryBudgetBytes(settings.device)
                                                      : f.memory_budget_mb << 20;
  lifecycle::ModelManager manager(&pipeline, hooks, budget_bytes, f.model_dir);
  LogEvent(LogLevel::kInfo, "memory_budget",
           absl::StrCat("device=", settings.device, " budget=",
                        LogQuote(budget_bytes > 0 ? lifecycle::FormatBytes(budget_bytes) : "none")));
  if (!f.model_dir.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(f.model_dir, ec)) {
      std::fprintf(stderr, "--model-dir: %s is not a directory\n", f.model_dir.c_str());
      return 2;
    }
    // Declared now so that health knows them from the start.
    for (const auto& [name, dir] : manager.ListModelDir()) pipeline.AddLoading(name, dir);
  }

  rpc::ServerConfig config;
  config.listen = f.listen;
  config.socket_mode = socket_mode;
  config.socket_group = f.socket_group;
  config.max_message_bytes = f.max_message_bytes;
  config.reflection = f.reflection;
  config.limits.max_inputs = f.max_inputs;
  config.limits.max_text_bytes = f.max_text_bytes;
  config.limits.max_labels = f.max_labels;
  config.limits.stream_window = f.stream_window;
  config.limits.max_message_bytes = f.max_message_bytes;
  config.access_log = f.access_log;
  config.tls_cert_file = f.tls_cert;
  config.tls_key_file = f.tls_key;
  config.tls_client_ca_file = f.tls_client_ca;
  if (!f.auth_token_file.empty()) {
    std::ifstream in(f.auth_token_file);
    if (!in) {
      std::fprintf(stderr, "--auth-token-file: cannot read %s\n", f.auth_token_file.c_str());
      return 2;
    }
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty() && line[0] != '#') config.auth_tokens.push_back(line);
    }
    if (config.auth_tokens.empty()) {
      std::fprintf(stderr, "--auth-token-file: %s holds no token\n", f.auth_token_file.c_str());
      return 2;
    }
  }
  config.max_concurrent_per_client = f.max_concurrent_per_client;
  // One gate admits every call (bearer token, per-client limit) and accounts for it (metrics, access log).
  std::unique_ptr<rpc::CallGate> gate = rpc::Server::MakeGate(config);
  gate->SetServedModels([&pipeline](const std::string& name) { return pipeline.Holds(name); });
  std::vector<rpc::ServiceEntry> services;
  services.push_back({"embedserve.v1.EmbedService",
                      std::make_unique<rpc::EmbedServiceImpl>(&pipeline, config.limits, gate.get())});
  services.push_back({"embedserve.v1.ModelService",
                      std::make_unique<rpc::ModelServiceImpl>(&pipeline, gate.get())});
  if (f.enable_admin) {
    services.push_back({"embedserve.v1.AdminService",
                        std::make_unique<rpc::AdminServiceImpl>(&manager, &pipeline, gate.get())});
    if (config.auth_tokens.empty()) {
      for (const std::string& address : f.listen) {
        if (rpc::UnixSocketPath(address).empty()) {
          LogEvent(LogLevel::kWarning, "admin_without_token",
                   absl::StrCat("address=", LogQuote(address),
                                " hint=\"anyone who can connect may load and unload models; "
                                "use --auth-token-file, or listen only on a unix socket with a "
                                "restrictive --socket-mode\""));
        }
      }
    }
  }
  absl::StatusOr<std::unique_ptr<rpc::Server>> server =
      rpc::Server::Start(config, &pipeline, std::move(gate), std::move(services));
  if (!server.ok()) {
    LogEvent(LogLevel::kError, "start_failed", absl::StrCat("error=", LogQuote(server.status().message())));
    return 1;
  }
  std::string listening;
  for (const std::string& address : f.listen) absl::StrAppend(&listening, listening.empty() ? "" : ",", address);
  LogEvent(LogLevel::kInfo, "listening", absl::StrCat("addresses=", LogQuote(listening)));
  pipeline.Start();

  std::unique_ptr<http::HttpListener> exporter;
  metrics::Global().SetGauge("embedserve_queue_depth", "Items waiting per model and modality",
                             [&pipeline] { return pipeline.executor().QueueDepths(); });
  metrics::Global().SetGauge("embedserve_effective_max_batch_size",
                             "Max items per forward now (lowered after out-of-memory, grows back)",
                             [&pipeline] { return pipeline.executor().EffectiveBatchSizes(); });
  if (metrics::QueryDeviceMemory(settings.device).has_value()) {
    // One gauge per figure, each read from cudaMemGetInfo at scrape time.
    const auto device_memory_gauge = [device = settings.device](
                                         const char* name, const char* help,
                                         int64_t (*figure)(const metrics::DeviceMemory&)) {
      metrics::Global().SetGauge(name, help, [device, figure]() {
        std::vector<std::pair<metrics::Labels, double>> out;
        if (const auto memory = metrics::QueryDeviceMemory(device)) {
          out.push_back({{{"device", device}}, static_cast<double>(figure(*memory))});
        }
        return out;
      });
    };
    device_memory_gauge("embedserve_device_memory_total_bytes", "The device's memory",
                        [](const metrics::DeviceMemory& m) { return m.total_bytes; });
    device_memory_gauge("embedserve_device_memory_used_bytes",
                        "Device memory in use (by this process and any other)",
                        [](const metrics::DeviceMemory& m) { return m.total_bytes - m.free_bytes; });
  }
  if (!f.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<http::HttpListener>> started =
        http::StartMetricsEndpoint(f.metrics_listen, &metrics::Global());
    if (!started.ok()) {
      LogEvent(LogLevel::kError, "start_failed", absl::StrCat("error=", LogQuote(started.status().message())));
      (*server)->Shutdown(absl::Now());
      return 1;
    }
    exporter = *std::move(started);
    LogEvent(LogLevel::kInfo, "metrics_listening",
             absl::StrCat("address=", LogQuote(f.metrics_listen), " port=", exporter->port()));
  }

  std::unique_ptr<http::Gateway> http_gateway;
  if (!f.http_listen.empty()) {
    std::vector<http::ListenerOptions> listeners;
    for (const std::string& address : f.http_listen) {
      http::ListenerOptions options;
      options.address = address;
      options.socket_mode = socket_mode;
      options.max_connections = f.http_max_connections;
      options.keep_alive_timeout = absl::Seconds(f.http_idle_timeout_s);
      options.read_timeout = absl::Seconds(f.http_read_timeout_s);
      options.max_body_bytes =
          f.http_max_body_bytes > 0 ? f.http_max_body_bytes : 2 * int64_t{f.max_message_bytes};
      listeners.push_back(options);
    }
    absl::StatusOr<std::unique_ptr<http::Gateway>> started =
        http::Gateway::Start(listeners, (*server)->InProcessChannel(), &pipeline);
    if (!started.ok()) {
      LogEvent(LogLevel::kError, "start_failed", absl::StrCat("error=", LogQuote(started.status().message())));
      (*server)->Shutdown(absl::Now());
      return 1;
    }
    http_gateway = *std::move(started);
    for (size_t i = 0; i < f.http_listen.size(); ++i) {
      LogEvent(LogLevel::kInfo, "http_listening",
               absl::StrCat("address=", LogQuote(f.http_listen[i]),
                            " port=", http_gateway->ports()[i]));
    }
  }

  // Signal watcher: the first SIGTERM/SIGINT starts the drain.
  std::thread signal_thread([&] {
    unsigned char byte = 0;
    while (read(g_signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    const int signal_number = byte;
    LogEvent(LogLevel::kInfo, "draining",
             absl::StrCat("signal=", signal_number, " deadline_s=", f.drain_timeout_s));
    // HTTP requests being handled are gRPC calls in flight: the drain lets them finish
    // while the listener stops taking new ones.
    std::thread http_stop([&http_gateway] {
      if (http_gateway) http_gateway->Stop();
    });
    (*server)->Shutdown(absl::Now() + absl::Seconds(f.drain_timeout_s));
    http_stop.join();
    // The drain deadline holds even when the rest of the exit cannot go on (a model load
    // stuck in a read or a download, a forward that will not end): past a grace period after
    // the drain, the process ends anyway.
    std::thread([] {
      absl::SleepFor(kExitGrace);
      LogEvent(LogLevel::kError, "forced_exit",
               absl::StrCat("reason=\"still running ", absl::FormatDuration(kExitGrace),
                            " after the drain (a model load or a forward did not end)\""));
      std::_Exit(1);
    }).detach();
  });

  rpc::Server* const grpc_server = server->get();
  manager.SetServingHook([grpc_server](const std::string& name, bool serving) {
    grpc_server->SetServing(name, serving);
  });
  int failures = 0;
  std::vector<std::pair<metrics::Labels, double>> load_seconds;
  // Loading goes through the manager: the memory budget, warm-up before the model is
  // visible, health per model.
  for (const ModelArg& m : model_args) {
    const absl::Time start = absl::Now();
    if (!manager.Load(m.name, m.dir).ok()) {
      ++failures;
      continue;
    }
    load_seconds.emplace_back(metrics::Labels{{"model", m.name}},
                              absl::ToDoubleSeconds(absl::Now() - start));
  }
  if (!f.model_dir.empty()) {
    absl::StatusOr<lifecycle::ModelManager::RescanResult> scanned = manager.Rescan();
    if (!scanned.ok()) {
      ++failures;
      LogEvent(LogLevel::kError, "model_dir_scan_failed",
               absl::StrCat("error=", LogQuote(scanned.status().message())));
    } else {
      failures += static_cast<int>(scanned->failed.size());
      for (const auto& [name, why] : scanned->failed) {
        LogEvent(LogLevel::kError, "model_failed",
                 absl::StrCat("model=", name, " error=", LogQuote(why.message())));
      }
    }
  }
  if (failures > 0 && !f.continue_on_model_failure) {
    LogEvent(LogLevel::kError, "exiting",
             "reason=\"a model failed to load (use --continue-on-model-failure to serve the rest)\"");
    (*server)->Shutdown(absl::Now());
    manager.Stop();
    pipeline.Stop();
    kill(getpid(), SIGTERM);  // wakes the signal thread
    signal_thread.join();
    return 1;
  }
  metrics::Global().SetGauge("embedserve_model_load_seconds", "Time to load each model",
                             [load_seconds] { return load_seconds; });
  (*server)->SetServicesServing();
  if (model_args.empty() && f.model_dir.empty() && !f.enable_admin) {
    LogEvent(LogLevel::kWarning, "no_models", "hint=\"pass --model NAME=DIRECTORY\"");
  }
  manager.StartPolling(absl::Seconds(f.model_dir_poll_s));
  LogEvent(LogLevel::kInfo, "serving");

  // Hands freed heap pages back to the kernel now and then: under a long mixed load, memory
  // freed inside glibc's heaps is otherwise kept and RSS creeps (soak_bench).
  absl::Notification stop_trimming;
  std::thread trimmer([&stop_trimming] {
    while (!stop_trimming.WaitForNotificationWithTimeout(absl::Seconds(30))) {
#if defined(__GLIBC__)
      malloc_trim(0);
#endif
    }
  });

  signal_thread.join();
  stop_trimming.Notify();
  trimmer.join();
  (*server)->Wait();
  manager.Stop();
  exporter.reset();
  pipeline.Stop();
  LogEvent(LogLevel::kInfo, "stopped");
  return 0;
}

}  // namespace
}  // namespace embedserve

int main(int argc, char** argv) { return embedserve::Run(argc, argv); }
