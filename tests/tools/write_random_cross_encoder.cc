// Writes a tiny random cross-encoder in the hub layout, for tests in other languages (the
// Python client's): write_random_cross_encoder DIR xlm-roberta|bert [SEED].
#include <cstdio>
#include <cstdlib>
#include <string>

#include "server/models/cross_encoder/cross_encoder_random_checkpoint.h"

int main(int argc, char** argv) {
  using namespace embedserve::models::cross_encoder;
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DIR xlm-roberta|bert [SEED]\n", argv[0]);
    return 2;
  }
  const std::string kind = argv[2];
  if (kind != "xlm-roberta" && kind != "bert") {
    std::fprintf(stderr, "unknown kind '%s': xlm-roberta or bert\n", kind.c_str());
    return 2;
  }
  const CrossEncoderConfig config = kind == "bert" ? TinyBertConfig() : TinyXlmRobertaConfig();
  const uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 7;
  const absl::Status written = WriteRandomCrossEncoder(config, argv[1], "F32", seed);
  if (!written.ok()) {
    std::fprintf(stderr, "%s\n", written.ToString().c_str());
    return 1;
  }
  return 0;
}
