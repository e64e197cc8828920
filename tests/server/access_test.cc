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
