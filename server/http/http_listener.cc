// HttpListener: our accept loop, worker pool and socket stream around cpp-httplib's parser and
// router (Server::process_request), so that every bound is ours to set: cpp-httplib 0.11
// bounds neither the number of header lines nor a request's total read time, nor does its
// server listen on unix sockets.
#include "server/http/http_listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/server.h"

namespace embedserve::http {
namespace {

// cpp-httplib's router with its request processor made reachable (it is protected).
class Router : public httplib::Server {
 public:
  using httplib::Server::process_request;
};

int ToPollMs(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d) + 1, 1 << 30));
}

// Waits until `fd` has `events`, or `stop_fd` is readable (when >= 0), or `timeout` passes.
// True only for `events` on `fd`.
bool WaitFor(int fd, short events, absl::Duration timeout, int stop_fd = -1) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    pollfd fds[2] = {{fd, events, 0}, {stop_fd, POLLIN, 0}};
    const int n = poll(fds, stop_fd >= 0 ? 2 : 1, ToPollMs(deadline - absl::Now()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (stop_fd >= 0 && (fds[1].revents & POLLIN)) return false;
    return (fds[0].revents & (events | POLLHUP | POLLERR)) != 0;
  }
}

// One connection as cpp-httplib's Stream: buffered reads under a per-request deadline and
// byte budget, writes under a timeout.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(int fd, std::string ip, int port, const ListenerOptions& options)
      : fd_(fd), ip_(std::move(ip)), port_(port), options_(options) {}

  // Starts the next request's deadline and budget.
  void BeginRequest() {
    deadline_ = absl::Now() + options_.read_timeout;
    budget_ = options_.max_head_bytes + options_.max_body_bytes;
  }
  // The deadline or the budget ran out, or the peer failed: the connection cannot go on.
  bool broken() const { return broken_; }
  bool has_buffered() const { return begin_ < end_; }

  bool is_readable() const override {
    return has_buffered() || WaitFor(fd_, POLLIN, deadline_ - absl::Now());
  }
  bool is_writable() const override { return WaitFor(fd_, POLLOUT, options_.write_timeout); }

  ssize_t read(char* out, size_t size) override {
    if (has_buffered()) {
      const size_t n = std::min(size, end_ - begin_);
      std::memcpy(out, buffer_ + begin_, n);
      begin_ += n;
      return static_cast<ssize_t>(n);
    }
    if (size >= sizeof(buffer_)) return Receive(out, size);
    const ssize_t n = Receive(buffer_, sizeof(buffer_));
    if (n <= 0) return n;
    begin_ = 0;
    end_ = static_cast<size_t>(n);
    return read(out, size);
  }

  ssize_t write(const char* data, size_t size) override {
    if (!WaitFor(fd_, POLLOUT, options_.write_timeout)) {
      broken_ = true;
      return -1;
    }
    const ssize_t n = send(fd_, data, size, MSG_NOSIGNAL);
    if (n < 0) broken_ = true;
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = ip_;
    port = port_;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip.clear();
    port = 0;
  }
  socket_t socket() const override { return fd_; }

 private:
  ssize_t Receive(char* out, size_t size) {
    if (budget_ <= 0 || !WaitFor(fd_, POLLIN, deadline_ - absl::Now())) {
      broken_ = true;
      return -1;
    }
    size = std::min<size_t>(size, static_cast<size_t>(budget_));
    ssize_t n;
    do {
      n = recv(fd_, out, size, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      broken_ = true;
      return n;
    }
    budget_ -= n;
    return n;
  }

  const int fd_;
  const std::string ip_;
  const int port_;
  const ListenerOptions& options_;
  absl::Time deadline_ = absl::InfinitePast();
  int64_t budget_ = 0;
  bool broken_ = false;
  char buffer_[8192];
  size_t begin_ = 0, end_ = 0;
};

// "HOST:PORT" -> host, port (brackets of an IPv6 host removed; empty host: every address).
absl::Status SplitHostPort(const ListenerOptions& options, std::string* host, int* port) {
  const std::string& address = options.address;
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), port) ||
      *port < 0 || *port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.flag, ": expected HOST:PORT or unix:PATH, got '", address, "'"));
  }
  *host = address.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  if (host->empty()) *host = "0.0.0.0";
  return absl::OkStatus();
}

absl::Status Failed(const ListenerOptions& options, const std::string& what) {
  return absl::UnavailableError(
      absl::StrCat(options.flag, " ", options.address, ": ", what, ": ", std::strerror(errno)));
}

}  // namespace

struct HttpListener::State {
  ListenerOptions options;
  Router router;
  int listen_fd = -1;
  int stop_pipe[2] = {-1, -1};
  std::string unix_path;
  std::atomic<bool> stopping{false};
  std::thread acceptor;
  std::vector<std::thread> workers;
  absl::Mutex mu;
  std::deque<std::pair<int, std::pair<std::string, int>>> accepted ABSL_GUARDED_BY(mu);
  absl::Mutex stop_mu;  // serializes Stop
  bool stopped ABSL_GUARDED_BY(stop_mu) = false;

  bool Stopping() const { return stopping.load(std::memory_order_acquire); }

  void Accept() {
    while (!Stopping()) {
      if (!WaitFor(listen_fd, POLLIN, absl::Seconds(1), stop_pipe[0])) continue;
      sockaddr_storage peer{};
      socklen_t peer_size = sizeof peer;
      const int fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_size,
                             SOCK_CLOEXEC);
      if (fd < 0) {
        // EMFILE and the like: back off instead of spinning.
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
          absl::SleepFor(absl::Milliseconds(10));
        }
        continue;
      }
      std::string ip;
      int port = 0;
      if (peer.ss_family == AF_INET || peer.ss_family == AF_INET6) {
        char host[NI_MAXHOST], service[NI_MAXSERV];
        if (getnameinfo(reinterpret_cast<sockaddr*>(&peer), peer_size, host, sizeof host,
                        service, sizeof service, NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
          ip = host;
          (void)absl::SimpleAtoi(service, &port);
        }
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      } else {
        ip = "unix";
      }
      // Waits while as many connections wait as there are workers: the kernel's backlog
      // then holds the rest.
      absl::MutexLock lock(&mu);
      const size_t capacity = static_cast<size_t>(options.max_connections);
      auto room = [this, capacity]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return accepted.size() < capacity || Stopping();
      };
      mu.Await(absl::Condition(&room));
      if (Stopping()) {
        close(fd);
        return;
      }
      accepted.push_back({fd, {std::move(ip), port}});
    }
  }

  void Work() {
    for (;;) {
      std::pair<int, std::pair<std::string, int>> next;
      {
        absl::MutexLock lock(&mu);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
          return !accepted.empty() || Stopping();
        };
        mu.Await(absl::Condition(&ready));
        if (accepted.empty()) return;
        next = std::move(accepted.front());
        accepted.pop_front();
      }
      Serve(next.first, next.second.first, next.second.second);
    }
  }

  void Serve(int fd, const std::string& ip, int port) {
    ConnectionStream stream(fd, ip, port, options);
    for (int n = 0; n < options.max_requests_per_connection && !Stopping(); ++n) {
      // A connection that sends nothing (first or next request) is closed after the
      // keep-alive timeout, so idle connections free their workers quickly.
      if (!stream.has_buffered() &&
          !WaitFor(fd, POLLIN, options.keep_alive_timeout, stop_pipe[0])) {
        break;
      }
      stream.BeginRequest();
      bool closed = false;
      const bool last = n + 1 == options.max_requests_per_connection || Stopping();
      if (!router.process_request(stream, last, closed, nullptr)) break;
      if (closed || last || stream.broken()) break;
    }
    shutdown(fd, SHUT_RDWR);
    close(fd);
  }
};

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(
    const ListenerOptions& options, const std::function<void(httplib::Server&)>& add_routes) {
  std::unique_ptr<HttpListener> listener(new HttpListener());
  listener->state_ = std::make_unique<State>();
  State& state = *listener->state_;
  state.options = options;
  state.options.max_connections = std::max(1, options.max_connections);
  state.router.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  // What the Keep-Alive response header announces (the loop in Serve enforces it).
  state.router.set_keep_alive_max_count(static_cast<size_t>(options.max_requests_per_connection));
  state.router.set_keep_alive_timeout(
      std::max<time_t>(1, absl::ToInt64Seconds(options.keep_alive_timeout)));
  add_routes(state.router);

  if (options.address.rfind("unix:", 0) == 0) {
    std::string path = options.address.substr(5);
    if (path.rfind("//", 0) == 0) path = path.substr(2);
    sockaddr_un addr{};
    if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.flag, ": unix socket path must be 1 to ", sizeof(addr.sun_path) - 1,
          " bytes, got '", path, "'"));
    }
    if (absl::Status prepared = rpc::PrepareSocketPath(path); !prepared.ok()) {
      return absl::Status(prepared.code(), absl::StrCat(options.flag, ": ", prepared.message()));
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    state.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (state.listen_fd < 0) return Failed(options, "socket()");
    if (bind(state.listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return Failed(options, "cannot bind");
    }
    state.unix_path = path;
    // Before listen(): nobody can connect in between with the umask's mode.
    if (chmod(path.c_str(), static_cast<mode_t>(options.socket_mode)) != 0) {
      return Failed(options, "cannot chmod the socket");
    }
  } else {
    std::string host;
    int port = 0;
    if (absl::Status split = SplitHostPort(options, &host, &port); !split.ok()) return split;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 ||
        found == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.flag, ": cannot resolve host '", host, "'"));
    }
    state.listen_fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    if (state.listen_fd >= 0) {
      setsockopt(state.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    const bool bound = state.listen_fd >= 0 &&
                       bind(state.listen_fd, found->ai_addr, found->ai_addrlen) == 0;
    freeaddrinfo(found);
    if (!bound) return Failed(options, "cannot bind (in use, or no such address)");
    sockaddr_storage local{};
    socklen_t local_size = sizeof local;
    getsockname(state.listen_fd, reinterpret_cast<sockaddr*>(&local), &local_size);
    listener->port_ = ntohs(local.ss_family == AF_INET6
                                ? reinterpret_cast<sockaddr_in6*>(&local)->sin6_port
                                : reinterpret_cast<sockaddr_in*>(&local)->sin_port);
  }
  if (listen(state.listen_fd, 128) != 0) return Failed(options, "cannot listen");
  if (pipe2(state.stop_pipe, O_CLOEXEC) != 0) return Failed(options, "pipe()");

  state.workers.reserve(state.options.max_connections);
  for (int i = 0; i < state.options.max_connections; ++i) {
    state.workers.emplace_back([&state] { state.Work(); });
  }
  state.acceptor = std::thread([&state] { state.Accept(); });
  return listener;
}

void HttpListener::Stop() {
  if (!state_) return;
  State& state = *state_;
  absl::MutexLock stop_lock(&state.stop_mu);
  if (state.stopped) return;
  state.stopped = true;
  {
    absl::MutexLock lock(&state.mu);
    state.stopping.store(true, std::memory_order_release);
  }
  if (state.stop_pipe[1] >= 0) {
    const char byte = 0;
    (void)!::write(state.stop_pipe[1], &byte, 1);  // wakes every poll on the pipe, for good
  }
  if (state.acceptor.joinable()) state.acceptor.join();
  for (std::thread& worker : state.workers) worker.join();
  {
    absl::MutexLock lock(&state.mu);
    for (auto& waiting : state.accepted) close(waiting.first);
    state.accepted.clear();
  }
  // Also what a Start that failed part-way leaves.
  if (state.listen_fd >= 0) close(state.listen_fd);
  if (!state.unix_path.empty()) unlink(state.unix_path.c_str());
  for (int fd : state.stop_pipe) {
    if (fd >= 0) close(fd);
  }
}

HttpListener::~HttpListener() { Stop(); }

}  // namespace embedserve::http
