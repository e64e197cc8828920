// ServerProcess: fork/exec of the server binary for integration tests.
#include "tests/server/server_process.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>

#include "client/embedserve_client.h"

namespace embedserve::testing {

int FreeTcpPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

ServerProcess::ServerProcess(std::vector<std::string> extra_args, double startup_s) {
  char tmpl[] = "/tmp/embedserve-test-XXXXXX";
  dir_ = mkdtemp(tmpl);
  socket_path_ = dir_ + "/embedserve.sock";
  port_ = FreeTcpPort();
  std::vector<std::string> args = {EMBEDSERVE_BINARY, "--listen", "unix:" + socket_path_,
                                   "--listen", "127.0.0.1:" + std::to_string(port_),
                                   "--log-level", "warning"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  pid_ = fork();
  if (pid_ == 0) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int>(startup_s * 1000));
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return;
    }
    // A fresh channel per attempt: a channel that failed to connect backs off for seconds.
    auto client = client::Client::Create(unix_target(), {absl::Seconds(1)});
    auto serving = [&client] {
      auto health = client->Health("");
      return health.ok() && *health == grpc::health::v1::HealthCheckResponse::SERVING;
    };
    // gRPC's default health service says SERVING for "" from BuildAndStart until the server
    // sets NOT_SERVING a moment later; an answer in that window is not readiness. A second
    // SERVING 50 ms on comes after it, so only once the models are loaded.
    if (serving()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (serving()) {
        healthy_ = true;
        return;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int ServerProcess::WaitExit(double timeout_s) {
  if (pid_ < 0) return exit_code_;
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return exit_code_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  exit_code_ = -1;  // did not exit in time
  return exit_code_;
}

int ServerProcess::StopWith(int signal, double timeout_s) {
  if (pid_ < 0) return exit_code_;
  kill(pid_, signal);
  return WaitExit(timeout_s);
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) StopWith(SIGTERM, 30);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string HttpGetLocal(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  send(fd, request.data(), request.size(), 0);
  std::string response;
  char buffer[8192];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof buffer, 0)) > 0) response.append(buffer, n);
  close(fd);
  return response;
}

std::string HttpGetLocalContaining(int port, const std::string& path,
                                   const std::vector<std::string>& parts, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(timeout_s));
  while (true) {
    std::string response = HttpGetLocal(port, path);
    bool all = true;
    for (const std::string& part : parts) all = all && response.find(part) != std::string::npos;
    if (all || std::chrono::steady_clock::now() >= deadline) return response;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close_paren = stat.rfind(')');  // the command name may hold spaces
  if (close_paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close_paren + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i >= 14) ticks += std::stod(field);  // fields 14 and 15: utime, stime (clock ticks)
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace embedserve::testing
