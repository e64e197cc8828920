// Access control against the real binary: bearer tokens (health stays open), TLS and
// mutual TLS on TCP listeners, with certificates the test makes with openssl.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "client/embedserve_client.h"
#include "tests/server/server_process.h"

using embedserve::client::Client;
using embedserve::client::ClientOptions;
using embedserve::testing::ServerProcess;

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed
// by the CA, in a fresh directory.
std::string MakeCertificates() {
  char tmpl[] = "/tmp/embedserve-tls-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string script =
      "cd " + dir + " && "
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null && "
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
      "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem 2>/dev/null && "
      "openssl req -newkey rsa:2048 -nodes -subj /CN=worker -keyout client.key -out client.csr 2>/dev/null && "
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem 2>/dev/null";
  REQUIRE(std::system(script.c_str()) == 0);
  return dir;
}

}  // namespace

TEST_CASE("with a token file, every method but health needs a valid bearer token") {
  char tmpl[] = "/tmp/embedserve-auth-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/tokens") << "# workers\ns3cret-one\ns3cret-two\n";
  ServerProcess server({"--auth-token-file", dir + "/tokens"});
  REQUIRE(server.healthy());  // health needs no token

  for (const std::string& target : {server.unix_target(), server.tcp_target()}) {
    INFO(target);
    auto anonymous = Client::Create(target);
    CHECK(anonymous->ListModels().status().code() == absl::StatusCode::kUnauthenticated);
    embedserve::v1::EmbedRequest request;
    request.set_model("nope");
    request.add_inputs()->set_text("x");
    CHECK(anonymous->Embed(request).status().code() == absl::StatusCode::kUnauthenticated);
    ClientOptions wrong;
    wrong.bearer_token = "s3cret-on";  // a prefix of a valid token is not valid
    CHECK(Client::Create(target, wrong)->ListModels().status().code() ==
          absl::StatusCode::kUnauthenticated);
    ClientOptions right;
    right.bearer_token = "s3cret-two";
    auto authorized = Client::Create(target, right);
    CHECK(authorized->ListModels().ok());
    CHECK(authorized->Embed(request).status().code() == absl::StatusCode::kNotFound);
    CHECK(anonymous->Health("").ok());
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("TLS on TCP: a client trusting the CA connects, plaintext does not") {
  const std::string dir = MakeCertificates();
  ServerProcess server({"--tls-cert", dir + "/server.pem", "--tls-key", dir + "/server.key"});
  REQUIRE(server.healthy());  // the unix socket stays plaintext
  ClientOptions tls;
  tls.tls_root_ca = Slurp(dir + "/ca.pem");
  tls.timeout = absl::Seconds(5);
  CHECK(Client::Create(server.tcp_target(), tls)->ListModels().ok());
  ClientOptions plain;
  plain.timeout = absl::Seconds(2);
  CHECK_FALSE(Client::Create(server.tcp_target(), plain)->ListModels().ok());
  std::filesystem::remove_all(dir);
}

TEST_CASE("mutual TLS refuses a client without a certificate signed by the client CA") {
  const std::string dir = MakeCertificates();
  ServerProcess server({"--tls-cert", dir + "/server.pem", "--tls-key", dir + "/server.key",
                        "--tls-client-ca", dir + "/ca.pem"});
  REQUIRE(server.healthy());
  ClientOptions no_cert;
  no_cert.tls_root_ca = Slurp(dir + "/ca.pem");
  no_cert.timeout = absl::Seconds(3);
  CHECK_FALSE(Client::Create(server.tcp_target(), no_cert)->ListModels().ok());
  ClientOptions with_cert = no_cert;
  with_cert.tls_client_cert = Slurp(dir + "/client.pem");
  with_cert.tls_client_key = Slurp(dir + "/client.key");
  CHECK(Client::Create(server.tcp_target(), with_cert)->ListModels().ok());
  std::filesystem::remove_all(dir);
}

TEST_CASE("a TLS key that is not PEM stops the server at start with the flag named") {
  char tmpl[] = "/tmp/embedserve-badtls-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/x.pem") << "not a certificate";
  ServerProcess server({"--tls-cert", dir + "/x.pem", "--tls-key", dir + "/x.pem"}, 10);
  CHECK_FALSE(server.healthy());
  CHECK(server.WaitExit() == 1);
  std::filesystem::remove_all(dir);
}

// Unix socket permissions (issue 7): another user's process is refused by the kernel when
// --socket-mode forbids it. Needs root (to act as `nobody`); CI runs as root.
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace {

// Connects to the unix socket `path` from a forked child running as `uid`:`gid` with the
// given supplementary groups; returns 0 if the connect succeeded, else the child's errno
// (or -1 if the child could not change user, -2 if it died).
int ConnectAs(const std::string& path, uid_t uid, gid_t gid, std::vector<gid_t> groups) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Only async-signal-safe calls in the child of a multithreaded process.
    if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 ||
        setuid(uid) != 0 || geteuid() != uid) {
      _exit(255);
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) _exit(254);
    const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    _exit(rc == 0 ? 0 : (errno & 0xff));
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  if (!WIFEXITED(status)) return -2;
  const int code = WEXITSTATUS(status);
  return code == 255 ? -1 : code;
}

struct Nobody {
  uid_t uid;
  gid_t gid;
};

Nobody RequireRootAndNobody() {
  if (geteuid() != 0) {
    FAIL("this test must run as root: it checks that the kernel refuses another user's "
         "connect to the unix socket, which needs switching to the unprivileged user "
         "`nobody` (setuid); a non-root run cannot check that, and must not pass silently. "
         "CI runs the suite as root.");
  }
  const passwd* pw = getpwnam("nobody");
  if (pw == nullptr) FAIL("no user `nobody` on this system (useradd -r nobody)");
  REQUIRE(pw->pw_uid != 0);
  return {pw->pw_uid, pw->pw_gid};
}

// The socket's directory (the test helper's private mkdtemp dir, 0700) must be searchable
// by others, or every connect fails on the directory rather than on the socket's mode.
void OpenDirectoryOf(const std::string& socket_path) {
  const std::string dir = socket_path.substr(0, socket_path.rfind('/'));
  REQUIRE(chmod(dir.c_str(), 0711) == 0);
}

mode_t ModeOf(const std::string& path) {
  struct stat st{};
  REQUIRE(stat(path.c_str(), &st) == 0);
  REQUIRE(S_ISSOCK(st.st_mode));
  return st.st_mode & 0777;
}

}  // namespace

TEST_CASE("socket mode 0600 refuses another user's connect with EACCES, 0666 lets it in") {
  const Nobody nobody = RequireRootAndNobody();
  {
    ServerProcess server({"--socket-mode", "0600"});
    REQUIRE(server.healthy());
    OpenDirectoryOf(server.socket_path());
    CHECK(ModeOf(server.socket_path()) == 0600);
    CHECK(ConnectAs(server.socket_path(), nobody.uid, nobody.gid, {nobody.gid}) == EACCES);
    // The owner (root here, but without relying on root's override: the mode allows it).
    CHECK(ConnectAs(server.socket_path(), 0, 0, {0}) == 0);
    CHECK(server.StopWith(SIGTERM) == 0);
  }
  {
    ServerProcess server({"--socket-mode", "0666"});
    REQUIRE(server.healthy());
    OpenDirectoryOf(server.socket_path());
    CHECK(ModeOf(server.socket_path()) == 0666);
    CHECK(ConnectAs(server.socket_path(), nobody.uid, nobody.gid, {nobody.gid}) == 0);
    CHECK(server.StopWith(SIGTERM) == 0);
  }
}

TEST_CASE("socket mode 0660 (the default) lets the socket's group connect, not other users") {
  const Nobody nobody = RequireRootAndNobody();
  ServerProcess server({});  // default mode
  REQUIRE(server.healthy());
  OpenDirectoryOf(server.socket_path());
  CHECK(ModeOf(server.socket_path()) == 0660);
  struct stat st{};
  REQUIRE(stat(server.socket_path().c_str(), &st) == 0);
  // A non-owner user that is a member of the socket's group (supplementary) gets in...
  CHECK(ConnectAs(server.socket_path(), nobody.uid, nobody.gid, {nobody.gid, st.st_gid}) == 0);
  // ...and the same user outside the group is refused.
  CHECK(ConnectAs(server.socket_path(), nobody.uid, nobody.gid, {nobody.gid}) == EACCES);
}

TEST_CASE("the socket group flag gives the socket to that group, whose members then connect") {
  const Nobody nobody = RequireRootAndNobody();
  // A group that is neither root's nor nobody's primary group (nobody's is nogroup).
  struct group* group = getgrnam("daemon");
  REQUIRE(group != nullptr);
  const gid_t gid = group->gr_gid;
  REQUIRE(gid != nobody.gid);
  ServerProcess server({"--socket-group", "daemon"});
  REQUIRE(server.healthy());
  OpenDirectoryOf(server.socket_path());
  struct stat st{};
  REQUIRE(stat(server.socket_path().c_str(), &st) == 0);
  CHECK(st.st_gid == gid);
  CHECK(ModeOf(server.socket_path()) == 0660);
  // nobody, as a member of that group, gets in; without it, not.
  CHECK(ConnectAs(server.socket_path(), nobody.uid, nobody.gid, {gid}) == 0);
  CHECK(ConnectAs(server.socket_path(), nobody.uid, nobody.gid, {}) == EACCES);
}
