// ClipTokenizer (see clip_tokenizer.h): vocabulary construction, the bundled merges,
// CLIP's pre-tokenizer split and the byte-level BPE merge loop.
#include "server/tokenizers/clip_tokenizer.h"

#include <algorithm>
#include <cstddef>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include <re2/re2.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/tokenizers/text_clean.h"

// bundled_vocab.S: the gzip bytes of assets/bpe_simple_vocab_16e6.txt.gz.
extern "C" const unsigned char embedserve_bpe_vocab_gz_begin[];
extern "C" const unsigned char embedserve_bpe_vocab_gz_end[];

namespace embedserve::tokenizers {
namespace {

constexpr char kStartToken[] = "<start_of_text>";
constexpr char kEndToken[] = "<end_of_text>";
// OpenCLIP: merges[1 : 49152 - 256 - 2 + 1].
constexpr size_t kOpenClipMerges = 49152 - 256 - 2;
// Words longer than this are not cached (they are rare and would crowd the cache).
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCacheEntriesPerShard = 8192;

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream data;
  data << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return data.str();
}

absl::StatusOr<std::string> Gunzip(absl::string_view gz) {
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) {
    return absl::InternalError("zlib inflateInit2 failed");
  }
  std::string out;
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  stream.avail_in = static_cast<uInt>(gz.size());
  char buffer[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    stream.next_out = reinterpret_cast<Bytef*>(buffer);
    stream.avail_out = sizeof(buffer);
    rc = inflate(&stream, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&stream);
      return absl::DataLossError(absl::StrCat("corrupt gzip data (zlib error ", rc, ")"));
    }
    out.append(buffer, sizeof(buffer) - stream.avail_out);
    if (rc == Z_OK && stream.avail_in == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      return absl::DataLossError("truncated gzip data");
    }
  }
  inflateEnd(&stream);
  return out;
}

bool SplitMerge(absl::string_view line, std::pair<std::string, std::string>* merge) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(line, absl::ByAnyChar(" \t\r\f\v"), absl::SkipEmpty());
  if (parts.size() != 2) return false;
  merge->first = std::string(parts[0]);
  merge->second = std::string(parts[1]);
  return true;
}

std::string Utf8Of(char32_t c) {
  std::string s;
  AppendUtf8(c, &s);
  return s;
}

}  // namespace

const std::vector<std::pair<uint8_t, char32_t>>& ByteLevelAlphabet() {
  static const auto* alphabet = [] {
    auto* table = new std::vector<std::pair<uint8_t, char32_t>>();
    std::vector<bool> printable(256, false);
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    for (int b = 0; b < 256; ++b) {
      if (printable[b]) table->emplace_back(static_cast<uint8_t>(b), static_cast<char32_t>(b));
    }
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      if (!printable[b]) table->emplace_back(static_cast<uint8_t>(b), next++);
    }
    return table;
  }();
  return *alphabet;
}

ClipTokenizer::ClipTokenizer() : cache_(new CacheShard[kCacheShards]) {}
ClipTokenizer::~ClipTokenizer() = default;

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::Build(
    std::vector<std::string> vocab,
    const std::vector<std::pair<std::string, std::string>>& merges) {
  std::unique_ptr<ClipTokenizer> tok(new ClipTokenizer());
  // Like Python's dict(zip(vocab, range(len(vocab)))): a repeated entry keeps its last id.
  absl::flat_hash_map<std::string, int32_t> encoder;
  encoder.reserve(vocab.size());
  for (size_t i = 0; i < vocab.size(); ++i) {
    if (!vocab[i].empty()) encoder[vocab[i]] = static_cast<int32_t>(i);
  }
  auto id_of = [&](const std::string& token) -> int32_t {
    auto it = encoder.find(token);
    return it == encoder.end() ? -1 : it->second;
  };
  for (const auto& [byte, ch] : ByteLevelAlphabet()) {
    const std::string s = Utf8Of(ch);
    const int32_t id = id_of(s);
    const int32_t end_id = id_of(s + "</w>");
    if (id < 0 || end_id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vocabulary lacks the byte-level token for byte ", static_cast<int>(byte)));
    }
    tok->byte_ids_[byte] = id;
    tok->byte_end_ids_[byte] = end_id;
  }
  tok->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t a = id_of(left);
    const int32_t b = id_of(right);
    const int32_t merged = id_of(left + right);
    if (a < 0 || b < 0 || merged < 0) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank + 1, " (\"", left, " ",
                                                     right, "\") uses tokens not in the vocabulary"));
    }
    // Like Python's dict(zip(merges, range(len(merges)))): a repeated pair keeps its last rank.
    tok->merges_.insert_or_assign(PairKey(a, b), Merge{static_cast<int32_t>(rank), merged});
  }
  tok->start_id_ = id_of(kStartToken);
  if (tok->start_id_ < 0) tok->start_id_ = id_of("<|startoftext|>");
  tok->end_id_ = id_of(kEndToken);
  if (tok->end_id_ < 0) tok->end_id_ = id_of("<|endoftext|>");
  if (tok->start_id_ < 0 || tok->end_id_ < 0) {
    return absl::InvalidArgumentError("vocabulary lacks the start/end of text tokens");
  }
  tok->vocab_ = std::move(vocab);

  // OpenCLIP compiles its pattern with regex.IGNORECASE. That folds the literals ("'S",
  // "'\u017F" match 's) but leaves the classes alone, except that U+0345 (which folds to a
  // Greek letter) drops out of [^\s\pL\pN]: it matches nothing and only separates pieces.
  RE2::Options options;
  options.set_log_errors(false);
  tok->pattern_ = std::make_unique<RE2>(
      R"((?i:<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d)|\pL+|\pN|[^\s\pL\pN\x{0345}]+)",
      options);
  if (!tok->pattern_->ok()) {
    return absl::InternalError(absl::StrCat("bad split pattern: ", tok->pattern_->error()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::FromMergesText(
    absl::string_view text) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (lines.size() < kOpenClipMerges + 1) {
    return absl::InvalidArgumentError(absl::StrCat("BPE file has ", lines.size(),
                                                   " lines, expected at least ",
                                                   kOpenClipMerges + 1));
  }
  std::vector<std::pair<std::string, std::string>> merges(kOpenClipMerges);
  for (size_t i = 0; i < kOpenClipMerges; ++i) {
    if (!SplitMerge(lines[i + 1], &merges[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("BPE file line ", i + 2, " is not a merge \"a b\""));
    }
  }
  std::vector<std::string> vocab;
  vocab.reserve(2 * 256 + merges.size() + 2);
  for (const auto& entry : ByteLevelAlphabet()) vocab.push_back(Utf8Of(entry.second));
  for (size_t i = 0; i < 256; ++i) vocab.push_back(vocab[i] + "</w>");
  for (const auto& [left, right] : merges) vocab.push_back(left + right);
  vocab.push_back(kStartToken);
  vocab.push_back(kEndToken);
  return Build(std::move(vocab), merges);
}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::FromBundledVocab() {
  static const absl::StatusOr<std::string>* text = [] {
    const absl::string_view gz(reinterpret_cast<const char*>(embedserve_bpe_vocab_gz_begin),
                               static_cast<size_t>(embedserve_bpe_vocab_gz_end -
                                                   embedserve_bpe_vocab_gz_begin));
    return new absl::StatusOr<std::string>(Gunzip(gz));
  }();
  if (!text->ok()) {
    return absl::Status(text->status().code(),
                        absl::StrCat("bundled BPE vocabulary: ", text->status().message()));
  }
  return FromMergesText(**text);
}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::FromBpeFile(
    const std::string& path) {
  absl::StatusOr<std::string> data = ReadFile(path);
  if (!data.ok()) return data.status();
  if (data->size() >= 2 && static_cast<unsigned char>((*data)[0]) == 0x1F &&
      static_cast<unsigned char>((*data)[1]) == 0x8B) {
    data = Gunzip(*data);
    if (!data.ok()) {
      return absl::Status(data.status().code(),
                          absl::StrCat(path, ": ", data.status().message()));
    }
  }
  absl::StatusOr<std::unique_ptr<ClipTokenizer>> tok = FromMergesText(*data);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::FromVocabAndMerges(
    const std::string& vocab_json, const std::string& merges_txt) {
  absl::StatusOr<std::string> vocab_text = ReadFile(vocab_json);
  if (!vocab_text.ok()) return vocab_text.status();
  absl::StatusOr<std::string> merges_text = ReadFile(merges_txt);
  if (!merges_text.ok()) return merges_text.status();

  const nlohmann::json json = nlohmann::json::parse(*vocab_text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(vocab_json, ": not a JSON object"));
  }
  constexpr int64_t kMaxVocab = 1 << 24;
  std::vector<std::string> vocab;
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() >= kMaxVocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocab_json, ": id of \"", it.key(), "\" is not a valid token id"));
    }
    const auto id = static_cast<size_t>(it.value().get<int64_t>());
    if (id >= vocab.size()) vocab.resize(id + 1);
    vocab[id] = it.key();
  }

  std::vector<std::pair<std::string, std::string>> merges;
  size_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(*merges_text, '\n')) {
    ++line_no;
    if (line_no == 1 && absl::StartsWith(line, "#version")) continue;
    if (line.find_first_not_of(" \t\r") == absl::string_view::npos) continue;
    std::pair<std::string, std::string> merge;
    if (!SplitMerge(line, &merge)) {
      return absl::InvalidArgumentError(
          absl::StrCat(merges_txt, ": line ", line_no, " is not a merge \"a b\""));
    }
    merges.push_back(std::move(merge));
  }
  absl::StatusOr<std::unique_ptr<ClipTokenizer>> tok = Build(std::move(vocab), merges);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(),
                        absl::StrCat(vocab_json, ", ", merges_txt, ": ", tok.status().message()));
  }
  return tok;
}

std::string ClipTokenizer::TokenString(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_.size()) return "";
  return vocab_[id];
}

void ClipTokenizer::Bpe(absl::string_view piece, std::vector<int32_t>* out) const {
  const size_t n = piece.size();
  const auto* bytes = reinterpret_cast<const unsigned char*>(piece.data());
  if (n == 1) {
    out->push_back(byte_end_ids_[bytes[0]]);
    return;
  }
  // Symbols as a doubly linked list over the byte positions; a symbol keeps the position
  // of its first byte, so (rank, position) orders a heap like OpenCLIP's loop: the
  // lowest-ranked pair first, all of its occurrences left to right.
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t left;
    int32_t right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<int32_t> ids, prev, next;
  thread_local std::vector<Candidate> heap;
  ids.resize(n);
  prev.resize(n);
  next.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i) {
    ids[i] = i + 1 == n ? byte_end_ids_[bytes[i]] : byte_ids_[bytes[i]];
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 == n ? -1 : static_cast<int32_t>(i + 1);
  }
  auto push = [&](int32_t pos) {
    const int32_t nxt = next[pos];
    if (nxt < 0) return;
    auto it = merges_.find(PairKey(ids[pos], ids[nxt]));
    if (it == merges_.end()) return;
    heap.push_back(Candidate{it->second.rank, pos, ids[pos], ids[nxt]});
    std::push_heap(heap.begin(), heap.end(), std::greater<Candidate>());
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    const Candidate c = heap.back();
    heap.pop_back();
    const int32_t pos = c.pos;
    const int32_t nxt = next[pos];
    // Stale: the symbol was merged away, or one side changed since this was queued.
    if (ids[pos] != c.left || nxt < 0 || ids[nxt] != c.right || prev[pos] == -2) continue;
    ids[pos] = merges_.find(PairKey(c.left, c.right))->second.merged;
    const int32_t after = next[nxt];
    next[pos] = after;
    if (after >= 0) prev[after] = pos;
    prev[nxt] = -2;  // dead
    ids[nxt] = -1;
    if (prev[pos] >= 0) push(prev[pos]);
    push(pos);
  }
  for (int32_t pos = 0; pos >= 0; pos = next[pos]) out->push_back(ids[pos]);
}

void ClipTokenizer::AppendWord(absl::string_view piece, std::vector<int32_t>* ids) const {
  if (piece == kStartToken) {
    ids->push_back(start_id_);
    return;
  }
  if (piece == kEndToken) {
    ids->push_back(end_id_);
    return;
  }
  if (piece.size() > kMaxCachedWordBytes) {
    Bpe(piece, ids);
    return;
  }
  const size_t hash = absl::Hash<absl::string_view>()(piece);
  CacheShard& shard = cache_[hash % kCacheShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.words.find(piece);
    if (it != shard.words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = ids->size();
  Bpe(piece, ids);
  std::vector<int32_t> word(ids->begin() + static_cast<std::ptrdiff_t>(before), ids->end());
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.words.size() >= kMaxCacheEntriesPerShard) shard.words.clear();
  shard.words.emplace(std::string(piece), std::move(word));
}

namespace {

bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'; }
bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// Length of the contraction or special token CLIP's pattern matches at text[i], or 0.
size_t LiteralAt(absl::string_view text, size_t i) {
  if (text[i] == '\'' && i + 1 < text.size()) {
    const char a = Lower(text[i + 1]);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < text.size()) {
      const char b = Lower(text[i + 2]);
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    return 0;
  }
  if (text[i] == '<') {
    for (absl::string_view special : {absl::string_view(kStartToken), absl::string_view(kEndToken)}) {
      if (text.size() - i >= special.size() &&
          absl::EqualsIgnoreCase(text.substr(i, special.size()), special)) {
        return special.size();
      }
    }
  }
  return 0;
}

}  // namespace

void ClipTokenizer::ForEachPiece(absl::string_view text,
                                 const std::function<bool(absl::string_view)>& fn) const {
  // ASCII runs are split by hand; a piece that starts at or runs into a non-ASCII
  // character is matched by the RE2 pattern, anchored at the piece's start. Every
  // character but RE2's \s starts a match, so this gives the unanchored search's pieces.
  const size_t n = text.size();
  const auto non_ascii = [&](size_t k) { return static_cast<unsigned char>(text[k]) >= 0x80; };
  size_t i = 0;
  while (i < n) {
    const char c = text[i];
    size_t end;
    if (IsAsciiSpace(c)) {
      ++i;
      continue;
    } else if (non_ascii(i)) {
      end = n;  // to the pattern
    } else if (size_t literal = LiteralAt(text, i); literal > 0) {
      end = i + literal;
    } else if (IsAsciiLetter(c)) {
      end = i + 1;
      while (end < n && IsAsciiLetter(text[end])) ++end;
    } else if (IsAsciiDigit(c)) {
      end = i + 1;
    } else {
      end = i + 1;
      while (end < n && !non_ascii(end) && !IsAsciiSpace(text[end]) &&
             !IsAsciiLetter(text[end]) && !IsAsciiDigit(text[end])) {
        ++end;
      }
    }
    const bool use_pattern = non_ascii(i) || (end < n && non_ascii(end) && !IsAsciiDigit(c) &&
                                              LiteralAt(text, i) == 0);
    if (use_pattern) {
      re2::StringPiece input(text.data() + i, n - i);
      if (!RE2::Consume(&input, *pattern_) || input.data() == text.data() + i) {
        // Nothing matches here (a character the case-insensitive pattern leaves out):
        // skip it like the search does.
        ++i;
        while (i < n && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
        continue;
      }
      end = static_cast<size_t>(input.data() - text.data());
    }
    if (!fn(text.substr(i, end - i))) return;
    i = end;
  }
}

std::vector<std::string> ClipTokenizer::SplitForTest(absl::string_view cleaned,
                                                     bool use_regex) const {
  std::vector<std::string> pieces;
  if (use_regex) {
    // The pattern searched unanchored, as OpenCLIP's findall does.
    RE2 group("(" + pattern_->pattern() + ")", pattern_->options());
    re2::StringPiece input(cleaned.data(), cleaned.size());
    re2::StringPiece piece;
    while (RE2::FindAndConsume(&input, group, &piece) && !piece.empty()) {
      pieces.emplace_back(piece.data(), piece.size());
    }
  } else {
    ForEachPiece(cleaned, [&](absl::string_view piece) {
      pieces.emplace_back(piece);
      return true;
    });
  }
  return pieces;
}

absl::StatusOr<ClipTokenizer::Encoded> ClipTokenizer::Encode(absl::string_view text,
                                                             int context_length,
                                                             bool truncate) const {
  if (context_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("context length must be positive, got ", context_length));
  }
  absl::StatusOr<std::string> clean = CleanClipText(text);
  if (!clean.ok()) return clean.status();
  Encoded result;
  result.ids.reserve(clean->size() / 3 + 2);
  result.ids.push_back(start_id_);
  // With truncation, tokens past the context length are never needed.
  const size_t stop_after =
      truncate ? static_cast<size_t>(context_length) : std::numeric_limits<size_t>::max();
  ForEachPiece(*clean, [&](absl::string_view piece) {
    AppendWord(piece, &result.ids);
    return result.ids.size() <= stop_after;
  });
  result.ids.push_back(end_id_);
  if (result.ids.size() > static_cast<size_t>(context_length)) {
    if (!truncate) {
      return absl::InvalidArgumentError(absl::StrCat(
          "text has ", result.ids.size(), " tokens, more than the context length ",
          context_length, " (set truncate to cut it)"));
    }
    result.ids.resize(static_cast<size_t>(context_length));
    result.ids.back() = end_id_;
    result.truncated = true;
  }
  return result;
}

}  // namespace embedserve::tokenizers
