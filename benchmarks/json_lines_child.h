// A benchmark's Python side as a child process: its stdin takes one command per line and its
// stdout answers one JSON object per line (rerank_bench's baseline, peer_bench's peer).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace embedserve::bench {

class JsonLinesChild {
 public:
  // Starts argv[0] with `argv`; its stderr stays ours. `name` is used in errors.
  JsonLinesChild(const std::vector<std::string>& argv, std::string name) : name_(std::move(name)) {
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) {
      throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
    }
    pid_ = fork();
    if (pid_ == 0) {
      dup2(to_child[0], 0);  // dup2 clears close-on-exec on 0 and 1
      dup2(from_child[1], 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    in_ = fdopen(to_child[1], "w");
    out_ = fdopen(from_child[0], "r");
  }
  // Closes its stdin (EOF: it finishes and exits), waits up to 30 s, then kills it.
  ~JsonLinesChild() {
    if (in_ != nullptr) fclose(in_);
    if (out_ != nullptr) fclose(out_);
    if (pid_ <= 0) return;
    for (int i = 0; i < 600; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  JsonLinesChild(const JsonLinesChild&) = delete;
  JsonLinesChild& operator=(const JsonLinesChild&) = delete;

  pid_t pid() const { return pid_; }

  // The next JSON line; throws if the child exited, or if the line has an "error" field.
  nlohmann::json Read() {
    char* line = nullptr;
    size_t capacity = 0;
    const ssize_t n = getline(&line, &capacity, out_);
    std::string text = n > 0 ? std::string(line, n) : "";
    std::free(line);
    if (n <= 0) throw std::runtime_error(name_ + " exited (see its stderr above)");
    nlohmann::json reply = nlohmann::json::parse(text);
    if (reply.is_object() && reply.contains("error")) {
      throw std::runtime_error(name_ + ": " + reply["error"].dump());
    }
    return reply;
  }
  // Sends one command line and reads its answer.
  nlohmann::json Command(const std::string& command) {
    std::fprintf(in_, "%s\n", command.c_str());
    std::fflush(in_);
    return Read();
  }

 private:
  const std::string name_;
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

}  // namespace embedserve::bench
