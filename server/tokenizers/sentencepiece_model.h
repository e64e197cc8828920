// A self-contained reader and encoder for SentencePiece BPE models (tokenizer.model). Written
// here because Debian's libsentencepiece bundles and exports its own protobuf-lite, which
// clashes with libtorch's/gRPC's libprotobuf at load time (a crash in static initialisation).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace embedserve::tokenizers {

class SentencePieceModel {
 public:
  enum class PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

  // Parses a serialized ModelProto. nullptr with `error` set if the file cannot be read or
  // uses what this encoder does not implement (unigram models, a precompiled normalizer).
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
