// Server start-up and shutdown: socket preparation, builder settings, health, reflection.
#include "server/rpc/server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"

namespace embedserve::rpc {

std::string UnixSocketPath(const std::string& address) {
  if (absl::StartsWith(address, "unix://")) return address.substr(7);
  if (absl::StartsWith(address, "unix:")) return address.substr(5);
  return "";
}

absl::Status PrepareSocketPath(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot inspect socket path ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " exists and is not a socket; refusing to replace it"));
  }
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long: ", path));
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket(): ", std::strerror(errno)));
  const bool live = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  if (live) {
    return absl::FailedPreconditionError(absl::StrCat(
        "another server is listening on ", path, "; stop it or choose another --listen"));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot remove stale socket ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::ostringstream content;
  content << in.rdbuf();
  if (content.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is not a PEM file"));
  }
  return content.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsCredentials(
    const ServerConfig& config) {
  if (config.tls_cert_file.empty() || config.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  absl::StatusOr<std::string> cert = ReadPem(config.tls_cert_file, "--tls-cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(config.tls_key_file, "--tls-key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!config.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem(config.tls_client_ca_file, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

Server::~Server() {
  if (!shut_down_ && server_) Shutdown(absl::Now());
}

std::unique_ptr<CallGate> Server::MakeGate(const ServerConfig& config) {
  return std::make_unique<CallGate>(config.max_concurrent_per_client, config.access_log,
                                       config.auth_tokens);
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerConfig& config,
                                                      pipeline::Pipeline* pipeline,
                                                      std::unique_ptr<CallGate> gate,
                                                      std::vector<ServiceEntry> services) {
  if (config.listen.empty()) return absl::InvalidArgumentError("no --listen address given");
  // Reflection must see health.proto: touching the descriptor keeps it linked in.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  if (config.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<Server> server(new Server());
  std::shared_ptr<grpc::ServerCredentials> tcp_credentials = grpc::InsecureServerCredentials();
  if (!config.tls_cert_file.empty() || !config.tls_key_file.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tls = TlsCredentials(config);
    if (!tls.ok()) return tls.status();
    tcp_credentials = *tls;
  }
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(config.max_message_bytes);
  builder.SetMaxSendMessageSize(config.max_message_bytes);
  std::vector<std::unique_ptr<int>> ports;
  for (const std::string& address : config.listen) {
    const std::string path = UnixSocketPath(address);
    if (!path.empty()) {
      absl::Status prepared = PrepareSocketPath(path);
      if (!prepared.ok()) return prepared;
      server->socket_paths_.push_back(path);
      builder.AddListeningPort(absl::StrCat("unix:", path), grpc::InsecureServerCredentials());
    } else {
      ports.push_back(std::make_unique<int>(0));
      builder.AddListeningPort(address, tcp_credentials, ports.back().get());
    }
  }
  server->gate_ = std::move(gate);
  server->pipeline_ = pipeline;
  server->services_ = std::move(services);
  for (const ServiceEntry& entry : server->services_) builder.RegisterService(entry.service.get());

  gid_t socket_gid = static_cast<gid_t>(-1);
  if (!config.socket_group.empty()) {
    struct group* group = getgrnam(config.socket_group.c_str());
    if (group == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("--socket-group: no group '", config.socket_group, "'"));
    }
    socket_gid = group->gr_gid;
  }

  // Sockets are created with the requested mode (umask applies at bind time).
  const mode_t old_mask = umask(static_cast<mode_t>(~config.socket_mode & 0777));
  server->server_ = builder.BuildAndStart();
  umask(old_mask);
  if (!server->server_) {
    return absl::UnavailableError(absl::StrCat(
        "could not bind every listen address (", config.listen.size(),
        " given); is a port in use or a directory missing?"));
  }
  // gRPC's default health service starts with "" SERVING: say NOT_SERVING at once, before
  // anything else, so a probe can see SERVING for "" only for the moments in between.
  server->SetAllNotServing();
  for (const auto& port : ports) {
    if (*port == 0) return absl::UnavailableError("a TCP listen address could not be bound");
    server->tcp_ports_.push_back(*port);
  }
  for (const std::string& path : server->socket_paths_) {
    chmod(path.c_str(), static_cast<mode_t>(config.socket_mode));
    if (socket_gid != static_cast<gid_t>(-1) && chown(path.c_str(), static_cast<uid_t>(-1), socket_gid) != 0) {
      const int error = errno;
      server->server_->Shutdown();
      return absl::PermissionDeniedError(absl::StrCat("--socket-group: cannot give ", path,
                                                      " to group '", config.socket_group,
                                                      "': ", std::strerror(error)));
    }
  }
  server->SetAllNotServing();
  return server;
}

std::shared_ptr<grpc::Channel> Server::InProcessChannel() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return server_->InProcessChannel(args);
}

void Server::SetServing(const std::string& service, bool serving) {
  if (auto* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(service, serving);
  }
}

void Server::SetAllNotServing() {
  SetServing("", false);
  for (const ServiceEntry& entry : services_) SetServing(entry.health_name, false);
  for (const pipeline::ModelSnapshot& model : pipeline_->Models()) SetServing(model.name, false);
}

void Server::SetServicesServing() {
  SetServing("", true);
  for (const ServiceEntry& entry : services_) SetServing(entry.health_name, true);
}

void Server::Shutdown(absl::Time deadline) {
  if (shut_down_) return;
  shut_down_ = true;
  SetAllNotServing();
  server_->Shutdown(absl::ToChronoTime(deadline));
  server_->Wait();
  for (const std::string& path : socket_paths_) unlink(path.c_str());
}

void Server::Wait() { server_->Wait(); }

}  // namespace embedserve::rpc
