// The gRPC server process edge: listeners (unix sockets and TCP), message size limits,
// reflection, health, and graceful shutdown. Owns the services; the pipeline is borrowed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/impl/service_type.h>
#include <grpcpp/channel.h>
#include <grpcpp/server.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/pipeline/pipeline.h"
#include "server/rpc/call_gate.h"
#include "server/rpc/limits.h"

namespace embedserve::rpc {

struct ServerConfig {
  // "unix:/path" or "host:port" (a bare "host:port" is TCP).
  std::vector<std::string> listen;
  // Permissions of created unix sockets.
  int socket_mode = 0660;
  std::string socket_group;  // group owning created unix sockets (empty: the process's)
  int max_message_bytes = 64 << 20;
  bool reflection = true;
  RequestLimits limits;
  int max_concurrent_per_client = 0;  // 0: no limit
  bool access_log = true;
  // Bearer tokens accepted (empty: no authentication). Health stays open.
  std::vector<std::string> auth_tokens;
  // TLS for TCP listeners (PEM files; empty: plaintext). A client CA turns on mutual TLS.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
};

// A service to serve, with the name health reports it under ("embedserve.v1.EmbedService").
struct ServiceEntry {
  std::string health_name;
  std::unique_ptr<grpc::Service> service;
};

// Not thread-safe except SetServing/SetAllNotServing (safe from any thread).
class Server {
 public:
  ~Server();

  // Prepares unix socket paths (a stale socket file is removed; a live one, or a path that
  // is not a socket, is an error), binds every listener and starts serving `services`, all
  // admitted through `gate` (which the services were built with). Health starts
  // NOT_SERVING for "", each service and each model until SetServing.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerConfig& config,
                                                       pipeline::Pipeline* pipeline,
                                                       std::unique_ptr<CallGate> gate,
                                                       std::vector<ServiceEntry> services);

  // The gate `config` asks for: per-client limit, access log, bearer tokens.
  static std::unique_ptr<CallGate> MakeGate(const ServerConfig& config);

  // A channel to these services inside the process (the HTTP gateway's way in): calls pass
  // the same gate, limits and pipeline as a socket's, with no message size limit of its own.
  std::shared_ptr<grpc::Channel> InProcessChannel() const;

  // The TCP ports actually bound, in listen order (useful with port 0).
  const std::vector<int>& tcp_ports() const { return tcp_ports_; }

  // Health for one service name ("" = the whole server; a model's name = that model).
  void SetServing(const std::string& service, bool serving);
  // "", every service, and every model the pipeline holds now (also those loaded after
  // start) answer NOT_SERVING.
  void SetAllNotServing();
  // "" and every service answer SERVING (each model follows its own load).
  void SetServicesServing();

  // Stops accepting calls, lets in-flight calls finish until `deadline`, cancels the rest,
  // then removes the unix socket files.
  void Shutdown(absl::Time deadline);
  void Wait();

 private:
  Server() = default;

  // Declared before server_ so they are destroyed after it.
  std::unique_ptr<CallGate> gate_;
  std::vector<ServiceEntry> services_;
  std::unique_ptr<grpc::Server> server_;
  pipeline::Pipeline* pipeline_ = nullptr;
  std::vector<std::string> socket_paths_;
  std::vector<int> tcp_ports_;
  bool shut_down_ = false;
};

// Server credentials for TCP listeners from the TLS settings (INVALID_ARGUMENT naming the
// flag for a missing or non-PEM file).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsCredentials(
    const ServerConfig& config);

// Parses "unix:PATH" / "unix://PATH"; returns the path or "" if `address` is not unix.
std::string UnixSocketPath(const std::string& address);

// Makes `path` usable for a new socket: absent is fine; a stale socket (nobody accepts) is
// removed; a live socket or a non-socket file is FAILED_PRECONDITION.
absl::Status PrepareSocketPath(const std::string& path);

}  // namespace embedserve::rpc
