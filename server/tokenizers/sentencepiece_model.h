// SentencePiece .model files, self-contained: the ModelProto reader and the BPE encoder
// (unigram models: UnigramTokenizer, unigram.h). Not Debian's libsentencepiece: its bundled
// protobuf-lite clashes with libtorch's/gRPC's libprotobuf at load time (a static-init crash).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace embedserve::tokenizers {

// ModelProto.SentencePiece.Type.
enum class SentencePieceType {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

// The fields of a serialized ModelProto that the encoders here read, with the proto2 defaults
// for those absent. Other fields (training options, self-test data) are skipped.
struct SentencePieceModelProto {
  struct Piece {
    std::string text;
    float score = 0.f;
    SentencePieceType type = SentencePieceType::kNormal;
  };
  std::vector<Piece> pieces;  // the id of a piece is its index
  // TrainerSpec.
  int model_type = 1;  // 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  // NormalizerSpec.
  std::string normalizer_name;       // e.g. "nmt_nfkc", "identity"; informative only
  std::string precompiled_charsmap;  // the normalization rules; empty for none
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// Reads the fields above from serialized ModelProto bytes. INVALID_ARGUMENT (the message
// names the field) if the bytes are not a well-formed protobuf message or a piece has a type
// outside 1..6; nothing else is checked (see SentencePieceModel::Parse and
// UnigramTokenizer::ParseSentencePiece for what each encoder requires).
absl::StatusOr<SentencePieceModelProto> ParseSentencePieceModelProto(absl::string_view bytes);

class SentencePieceModel {
 public:
  using PieceType = SentencePieceType;

  // Parses a serialized ModelProto. nullptr with `error` set if the file cannot be read or
  // uses what this encoder does not implement (unigram models: UnigramTokenizer encodes them;
  // a precompiled normalizer).
  static std::unique_ptr<SentencePieceModel> Load(const std::string& path, std::string* error);
  static std::unique_ptr<SentencePieceModel> Parse(const std::string& bytes, std::string* error);

  // Thread-safe (const). SentencePiece's Encode: normalization (whitespace -> U+2581, per the
  // model's normalizer spec), user-defined symbols kept whole, BPE merges by piece score,
  // byte fallback for unknown pieces. No bos/eos is added.
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const;
  int PieceToId(const std::string& piece) const;  // unk id if unknown
  std::string IdToPiece(int id) const;
  int size() const { return static_cast<int>(pieces_.size()); }
  bool IsControl(int id) const { return Type(id) == PieceType::kControl; }
  bool IsUnknown(int id) const { return Type(id) == PieceType::kUnknown; }
  PieceType Type(int id) const;

 private:
  SentencePieceModel() = default;
  std::string Normalize(const std::string& text) const;
  void EncodeNormalized(const std::string& normalized, std::vector<int>* ids) const;

  struct Piece {
    std::string text;
    float score = 0.f;
    PieceType type = PieceType::kNormal;
  };
  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int> normal_;    // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string, int> reserved_;  // the other types
  std::vector<std::string> user_defined_;          // longest first
  int unk_id_ = 0;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  int byte_ids_[256];
};

}  // namespace embedserve::tokenizers
