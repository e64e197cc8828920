// SentencePiece ModelProto parsing (protobuf wire format, for the BPE and the unigram
// encoders) and the BPE encoder.
#include "server/tokenizers/sentencepiece_model.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>

#include "absl/status/status.h"

namespace embedserve::tokenizers {
namespace {

// A minimal protobuf wire-format reader over a byte range.
struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  bool ok = true;

  bool done() const { return p >= end || !ok; }
  uint64_t Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) { ok = false; return 0; }
      const uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    ok = false;
    return 0;
  }
  // Length-delimited payload.
  Reader Sub() {
    const uint64_t n = Varint();
    if (!ok || n > uint64_t(end - p)) { ok = false; return {end, end}; }
    Reader r{p, p + n};
    p += n;
    return r;
  }
  uint32_t Fixed32() {
    if (end - p < 4) { ok = false; return 0; }
    uint32_t v;
    std::memcpy(&v, p, 4);
    p += 4;
    return v;
  }
  void Skip(int wire) {
    switch (wire) {
      case 0: Varint(); break;
      case 1: if (end - p < 8) ok = false; else p += 8; break;
      case 2: Sub(); break;
      case 5: Fixed32(); break;
      default: ok = false;
    }
  }
};

size_t Utf8Len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;  // a stray byte is its own symbol (it ends up byte-fallback or unk)
}

const char kSpaceSymbol[] = "\xe2\x96\x81";  // U+2581

}  // namespace

std::unique_ptr<SentencePieceModel> SentencePieceModel::Load(const std::string& path,
                                                             std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open";
    return nullptr;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return Parse(buffer.str(), error);
}

absl::StatusOr<SentencePieceModelProto> ParseSentencePieceModelProto(absl::string_view bytes) {
  SentencePieceModelProto proto;
  Reader r{reinterpret_cast<const uint8_t*>(bytes.data()),
           reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size()};
  const char* failed = "ModelProto";  // the message being read when the wire format broke
  while (!r.done()) {
    const uint64_t tag = r.Varint();
    const int field = static_cast<int>(tag >> 3), wire = static_cast<int>(tag & 7);
    if (field == 1 && wire == 2) {  // pieces
      Reader s = r.Sub();
      SentencePieceModelProto::Piece piece;
      while (!s.done()) {
        const uint64_t t = s.Varint();
        const int f = static_cast<int>(t >> 3), w = static_cast<int>(t & 7);
        if (f == 1 && w == 2) {
          Reader str = s.Sub();
          piece.text.assign(reinterpret_cast<const char*>(str.p), str.end - str.p);
        } else if (f == 2 && w == 5) {
          const uint32_t bits = s.Fixed32();
          std::memcpy(&piece.score, &bits, 4);
        } else if (f == 3 && w == 0) {
          const uint64_t type = s.Varint();
          if (s.ok && (type < 1 || type > 6)) {
            return absl::InvalidArgumentError(
                "ModelProto.pieces[" + std::to_string(proto.pieces.size()) +
                "].type: " + std::to_string(type) + " is not a piece type (1..6)");
          }
          piece.type = static_cast<SentencePieceType>(type);
        } else {
          s.Skip(w);
        }
      }
      if (!s.ok) {
        r.ok = false;
        failed = "ModelProto.pieces";
      }
      proto.pieces.push_back(std::move(piece));
    } else if (field == 2 && wire == 2) {  // trainer_spec
      Reader s = r.Sub();
      while (!s.done()) {
        const uint64_t t = s.Varint();
        const int f = static_cast<int>(t >> 3), w = static_cast<int>(t & 7);
        if (f == 3 && w == 0) proto.model_type = static_cast<int>(s.Varint());
        else if (f == 35 && w == 0) proto.byte_fallback = s.Varint() != 0;
        else if (f == 24 && w == 0) proto.treat_whitespace_as_suffix = s.Varint() != 0;
        else s.Skip(w);
      }
      if (!s.ok) {
        r.ok = false;
        failed = "ModelProto.trainer_spec";
      }
    } else if (field == 3 && wire == 2) {  // normalizer_spec
      Reader s = r.Sub();
      while (!s.done()) {
        const uint64_t t = s.Varint();
        const int f = static_cast<int>(t >> 3), w = static_cast<int>(t & 7);
        if ((f == 1 || f == 2) && w == 2) {
          Reader str = s.Sub();
          (f == 1 ? proto.normalizer_name : proto.precompiled_charsmap)
              .assign(reinterpret_cast<const char*>(str.p), str.end - str.p);
        } else if (f == 3 && w == 0) proto.add_dummy_prefix = s.Varint() != 0;
        else if (f == 4 && w == 0) proto.remove_extra_whitespaces = s.Varint() != 0;
        else if (f == 5 && w == 0) proto.escape_whitespaces = s.Varint() != 0;
        else s.Skip(w);
      }
      if (!s.ok) {
        r.ok = false;
        failed = "ModelProto.normalizer_spec";
      }
    } else {
      r.Skip(wire);
    }
  }
  if (!r.ok) {
    return absl::InvalidArgumentError(
        std::string(failed) +
        ": not a valid SentencePiece model (malformed protobuf: truncated, or not a .model file)");
  }
  return proto;
}

std::unique_ptr<SentencePieceModel> SentencePieceModel::Parse(const std::string& bytes,
                                                              std::string* error) {
  absl::StatusOr<SentencePieceModelProto> proto = ParseSentencePieceModelProto(bytes);
  if (!proto.ok()) {
    *error = std::string(proto.status().message());
    return nullptr;
  }
  std::unique_ptr<SentencePieceModel> m(new SentencePieceModel);
  m->byte_fallback_ = proto->byte_fallback;
  m->add_dummy_prefix_ = proto->add_dummy_prefix;
  m->remove_extra_whitespaces_ = proto->remove_extra_whitespaces;
  m->escape_whitespaces_ = proto->escape_whitespaces;
  for (SentencePieceModelProto::Piece& p : proto->pieces) {
    m->pieces_.push_back({std::move(p.text), p.score, p.type});
  }
  if (m->pieces_.empty()) {
    *error = "the model has no pieces";
    return nullptr;
  }
  if (proto->model_type != 2) {
    *error = "model_type " + std::to_string(proto->model_type) +
             " is not supported here (this encoder implements BPE models, as Gemma's; unigram "
             "models are read by UnigramTokenizer)";
    return nullptr;
  }
  if (!proto->precompiled_charsmap.empty()) {
    *error = "the normalizer has a precompiled character map (e.g. nmt_nfkc), which is not "
             "implemented (Gemma's tokenizer uses identity normalization)";
    return nullptr;
  }
  if (proto->treat_whitespace_as_suffix) {
    *error = "treat_whitespace_as_suffix is not supported";
    return nullptr;
  }
  std::fill(std::begin(m->byte_ids_), std::end(m->byte_ids_), -1);
  bool have_unk = false;
  for (int i = 0; i < static_cast<int>(m->pieces_.size()); ++i) {
    const Piece& p = m->pieces_[i];
    const bool normal = p.type == PieceType::kNormal || p.type == PieceType::kUserDefined ||
                        p.type == PieceType::kUnused;
    (normal ? m->normal_ : m->reserved_).emplace(p.text, i);
    if (p.type == PieceType::kUserDefined) m->user_defined_.push_back(p.text);
    if (p.type == PieceType::kUnknown && !have_unk) {
      m->unk_id_ = i;
      have_unk = true;
    }
    unsigned value = 0;
    if (p.type == PieceType::kByte && p.text.size() == 6 &&
        std::sscanf(p.text.c_str(), "<0x%02X>", &value) == 1 && value < 256) {
      m->byte_ids_[value] = i;
    }
  }
  if (!have_unk) {
    *error = "the model has no unknown piece";
    return nullptr;
  }
  std::sort(m->user_defined_.begin(), m->user_defined_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return m;
}

SentencePieceModel::PieceType SentencePieceModel::Type(int id) const {
  if (id < 0 || id >= size()) return PieceType::kUnknown;
  return pieces_[id].type;
}

int SentencePieceModel::PieceToId(const std::string& piece) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
  if (auto it = normal_.find(piece); it != normal_.end()) return it->second;
  return unk_id_;
}

std::string SentencePieceModel::IdToPiece(int id) const {
  if (id < 0 || id >= size()) return "";
  return pieces_[id].text;
}

std::string SentencePieceModel::Normalize(const std::string& text) const {
  std::string in = text;
  if (remove_extra_whitespaces_) {
    std::string collapsed;
    bool prev_space = true;  // drops leading spaces
    for (char c : in) {
      if (c == ' ') {
        if (!prev_space) collapsed.push_back(c);
        prev_space = true;
      } else {
        collapsed.push_back(c);
        prev_space = false;
      }
    }
    while (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
    in = std::move(collapsed);
  }
  std::string out;
  out.reserve(in.size() + 8);
  if (add_dummy_prefix_ && !in.empty()) out += escape_whitespaces_ ? kSpaceSymbol : " ";
  for (char c : in) {
    if (c == ' ' && escape_whitespaces_) {
      out += kSpaceSymbol;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void SentencePieceModel::EncodeNormalized(const std::string& s, std::vector<int>* ids) const {
  struct Symbol {
    size_t begin, len;
    int prev, next;
    bool freeze;
  };
  std::vector<Symbol> symbols;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t len = 0;
    bool freeze = false;
    for (const std::string& u : user_defined_) {
      if (s.compare(pos, u.size(), u) == 0) {
        len = u.size();
        freeze = true;
        break;
      }
    }
    if (len == 0) len = std::min(Utf8Len(static_cast<unsigned char>(s[pos])), s.size() - pos);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({pos, len, index - 1, -1, freeze});
    if (index > 0) symbols[index - 1].next = index;
    pos += len;
  }
  struct Pair {
    float score;
    int left, right;
    size_t size;
  };
  // Highest score first; ties go to the leftmost pair.
  auto worse = [](const Pair& a, const Pair& b) {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> agenda(worse);
  std::unordered_map<std::string, std::pair<std::string, std::string>> rev_merge;
  auto maybe_add = [&](int left, int right) {
    if (left < 0 || right < 0 || symbols[left].freeze || symbols[right].freeze) return;
    const size_t size = symbols[left].len + symbols[right].len;
    std::string piece = s.substr(symbols[left].begin, size);
    auto it = normal_.find(piece);
    if (it == normal_.end()) return;
    agenda.push({pieces_[it->second].score, left, right, size});
    if (pieces_[it->second].type == PieceType::kUnused) {
      rev_merge[piece] = {s.substr(symbols[left].begin, symbols[left].len),
                          s.substr(symbols[right].begin, symbols[right].len)};
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i) maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& l = symbols[top.left];
    Symbol& r = symbols[top.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != top.size || l.next != top.right) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = top.left;
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }
  // Output, re-splitting unused pieces, with byte fallback for unknown ones.
  std::vector<std::pair<std::string, int>> pieces;
  std::function<void(const std::string&)> resegment = [&](const std::string& w) {
    const int id = PieceToId(w);
    if (id != unk_id_ && pieces_[id].type != PieceType::kUnused) {
      pieces.emplace_back(w, id);
      return;
    }
    if (auto it = rev_merge.find(w); it != rev_merge.end()) {
      resegment(it->second.first);
      resegment(it->second.second);
      return;
    }
    pieces.emplace_back(w, unk_id_);
  };
  if (!symbols.empty()) {
    for (int i = 0; i != -1; i = symbols[i].next) resegment(s.substr(symbols[i].begin, symbols[i].len));
  }
  bool prev_unk = false;
  for (const auto& [w, id] : pieces) {
    const bool unk = id == unk_id_;
    if (unk && byte_fallback_) {
      for (unsigned char b : w) {
        const int byte_id = byte_ids_[b];
        ids->push_back(byte_id >= 0 ? byte_id : unk_id_);
      }
      prev_unk = false;
      continue;
    }
    if (unk && prev_unk) continue;  // consecutive unknowns collapse into one
    ids->push_back(id);
    prev_unk = unk;
  }
}

bool SentencePieceModel::Encode(const std::string& text, std::vector<int>* ids,
                                std::string* /*error*/) const {
  ids->clear();
  EncodeNormalized(Normalize(text), ids);
  return true;
}

}  // namespace embedserve::tokenizers
