// Test helper: runs the real `embedserve` binary on a temporary unix socket and a free
// loopback TCP port, waits until it is healthy, and stops it (SIGTERM) at the end.
#pragma once

#include <string>
#include <vector>

#include <sys/types.h>

namespace embedserve::testing {

class ServerProcess {
 public:
  // `extra_args` are passed after the listen flags. Waits up to `startup_s` for health
  // SERVING (or for the process to exit, which then is reported by exit_code()).
  explicit ServerProcess(std::vector<std::string> extra_args, double startup_s = 60);
  ~ServerProcess();

  const std::string& socket_path() const { return socket_path_; }
  std::string unix_target() const { return "unix:" + socket_path_; }
  std::string tcp_target() const { return "127.0.0.1:" + std::to_string(port_); }
  bool healthy() const { return healthy_; }
  pid_t pid() const { return pid_; }

  // Sends `signal` and waits for the exit; returns the exit status (or 128+signal).
  int StopWith(int signal, double timeout_s = 60);
  // Waits for the process to exit by itself.
  int WaitExit(double timeout_s = 60);

 private:
  std::string dir_;
  std::string socket_path_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool healthy_ = false;
  int exit_code_ = -1;
};

// A free loopback TCP port (bound then released; good enough for tests).
int FreeTcpPort();

// GET `path` from 127.0.0.1:`port` over HTTP/1.1 with "Connection: close": the whole
// response (status line, headers, body), or "" if nothing listens. Gives up after 10 s
// without data, as Prometheus' default scrape timeout does.
std::string HttpGetLocal(int port, const std::string& path);

// HttpGetLocal until the response contains every one of `parts`, for up to `timeout_s`; the
// last response. The server counts a call when gRPC is done with it, an instant after its
// client has the answer, so a scrape made at once may not show it yet.
std::string HttpGetLocalContaining(int port, const std::string& path,
                                   const std::vector<std::string>& parts, double timeout_s = 10);

// utime + stime of a process so far, in seconds (/proc/PID/stat); 0 if unknown.
double ProcessCpuSeconds(pid_t pid);

}  // namespace embedserve::testing
