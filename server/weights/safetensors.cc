// Torch-free safetensors: mmap'ed reader with strict header validation, sharded checkpoint
// archives (index json), and the atomic writer.
#include "server/weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace embedserve::weights {
namespace {

using json = nlohmann::json;

constexpr TensorDtype kAllDtypes[] = {
    TensorDtype::kF32, TensorDtype::kF16, TensorDtype::kBF16, TensorDtype::kF64,
    TensorDtype::kI64, TensorDtype::kI32, TensorDtype::kI16,  TensorDtype::kI8,
    TensorDtype::kU8,  TensorDtype::kBool};

// DtypeName for absl::StrCat (absl::string_view is not std::string_view in this absl build).
absl::string_view AbslName(TensorDtype dtype) {
  const std::string_view name = DtypeName(dtype);
  return absl::string_view(name.data(), name.size());
}

std::string SupportedDtypes() {
  std::vector<std::string> names;
  for (TensorDtype d : kAllDtypes) names.emplace_back(DtypeName(d));
  return absl::StrJoin(names, ", ");
}

// Quotes and truncates a user-controlled string for a message.
std::string Quote(absl::string_view s) {
  constexpr size_t kMax = 200;
  if (s.size() <= kMax) return absl::StrCat("'", s, "'");
  return absl::StrCat("'", s.substr(0, kMax), "...'");
}

std::string ErrnoText(int err) { return std::strerror(err); }

// A non-negative JSON integer that fits in int64 (so sums and products are easy to guard).
bool AsNonNegativeInt(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = v;
    return true;
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

std::string JsonSnippet(const json& j) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 80) + "...";
  return s;
}

// Parses JSON without exceptions, recording the first duplicate key (the DOM parser would
// keep only the last one silently). `what` names the document in messages.
struct JsonParseResult {
  json value;
  std::string duplicate_error;  // empty if none
};

JsonParseResult ParseJsonStrict(absl::string_view text) {
  JsonParseResult result;
  std::vector<std::set<std::string>> open_objects;
  std::string top_key;  // the current key of the top-level object
  json::parser_callback_t callback = [&](int depth, json::parse_event_t event,
                                         json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        if (open_objects.empty() || !parsed.is_string()) break;
        const std::string& key = parsed.get_ref<const std::string&>();
        if (depth == 1) top_key = key;
        if (!open_objects.back().insert(key).second && result.duplicate_error.empty()) {
          if (depth == 1) {
            result.duplicate_error = absl::StrCat("key ", Quote(key), " appears twice");
          } else {
            result.duplicate_error = absl::StrCat("key ", Quote(key), " appears twice inside ",
                                                  Quote(top_key));
          }
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  result.value = json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  return result;
}

bool ValidUtf8(absl::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return "";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Checked numel * element size for a shape; false on overflow or negative dims.
bool CheckedNumel(absl::Span<const int64_t> shape, uint64_t* numel) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
    if (n > static_cast<uint64_t>(INT64_MAX)) return false;
  }
  *numel = n;
  return true;
}

}  // namespace

std::string_view DtypeName(TensorDtype dtype) {
  switch (dtype) {
    case TensorDtype::kF32: return "F32";
    case TensorDtype::kF16: return "F16";
    case TensorDtype::kBF16: return "BF16";
    case TensorDtype::kF64: return "F64";
    case TensorDtype::kI64: return "I64";
    case TensorDtype::kI32: return "I32";
    case TensorDtype::kI16: return "I16";
    case TensorDtype::kI8: return "I8";
    case TensorDtype::kU8: return "U8";
    case TensorDtype::kBool: return "BOOL";
  }
  return "?";
}

size_t DtypeSize(TensorDtype dtype) {
  switch (dtype) {
    case TensorDtype::kF64:
    case TensorDtype::kI64: return 8;
    case TensorDtype::kF32:
    case TensorDtype::kI32: return 4;
    case TensorDtype::kF16:
    case TensorDtype::kBF16:
    case TensorDtype::kI16: return 2;
    case TensorDtype::kI8:
    case TensorDtype::kU8:
    case TensorDtype::kBool: return 1;
  }
  return 1;
}

bool ParseDtypeName(std::string_view name, TensorDtype* out) {
  for (TensorDtype d : kAllDtypes) {
    if (DtypeName(d) == name) {
      *out = d;
      return true;
    }
  }
  return false;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// ---------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open safetensors file: ", ErrnoText(err));
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(msg);
    return absl::InvalidArgumentError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot stat: ", ErrnoText(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": file has ", size,
        " bytes, too short for a safetensors file (needs an 8-byte header length)"));
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (mapping == MAP_FAILED) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot memory-map ", size, " bytes: ", ErrnoText(map_err)));
  }
  file->mapping_ = mapping;
  file->mapping_size_ = size;
  absl::Status status =
      file->Parse(absl::string_view(static_cast<const char*>(mapping), size));
  if (!status.ok()) return status;
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(
    std::string name, absl::string_view bytes) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(name);
  absl::Status status = file->Parse(bytes);
  if (!status.ok()) return status;
  return file;
}

absl::Status SafetensorsFile::Parse(absl::string_view bytes) {
  const std::string& p = path_;
  if (bytes.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        p, ": file has ", bytes.size(),
        " bytes, too short for a safetensors file (needs an 8-byte header length)"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  }
  const uint64_t available = bytes.size() - 8;
  if (header_len > available) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ": header length ", header_len, " runs past the end of the file (only ",
                     available, " bytes follow the 8-byte length)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(p, ": header length ", header_len,
                                                   " exceeds the limit of ", kMaxHeaderBytes,
                                                   " bytes"));
  }
  const absl::string_view header = bytes.substr(8, header_len);
  const absl::string_view data = bytes.substr(8 + header_len);
  const uint8_t* data_base = reinterpret_cast<const uint8_t*>(data.data());

  JsonParseResult parsed = ParseJsonStrict(header);
  if (parsed.value.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ": header (", header_len, " bytes) is not valid UTF-8 JSON"));
  }
  if (!parsed.duplicate_error.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ": header JSON is ambiguous: ", parsed.duplicate_error,
                     " (duplicate tensor names or fields are not allowed)"));
  }
  const json& root = parsed.value;
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ": header must be a JSON object, got ", root.type_name()));
  }

  struct Entry {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Entry> entries;
  std::vector<TensorView> tensors;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& value = it.value();
    if (name == "__metadata__") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(
            p, ": __metadata__ must be an object of strings, got ", value.type_name()));
      }
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(p, ": __metadata__ entry ", Quote(m.key()),
                           " must be a string, got ", m.value().type_name()));
        }
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat(p, ": tensor ", Quote(name), ": ");
    if (!value.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "expected an object with dtype, shape and data_offsets, got ",
          value.type_name()));
    }
    TensorView view;
    view.name = name;

    // dtype
    const auto dtype_it = value.find("dtype");
    if (dtype_it == value.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "missing \"dtype\""));
    }
    if (!dtype_it->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "dtype must be a string, got ", JsonSnippet(*dtype_it)));
    }
    const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
    if (!ParseDtypeName(dtype_name, &view.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(where, "unknown dtype ", Quote(dtype_name),
                                                     " (supported: ", SupportedDtypes(), ")"));
    }

    // shape
    const auto shape_it = value.find("shape");
    if (shape_it == value.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "missing \"shape\""));
    }
    if (!shape_it->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "shape must be an array of non-negative integers, got ", JsonSnippet(*shape_it)));
    }
    for (const json& dim : *shape_it) {
      uint64_t d = 0;
      if (!AsNonNegativeInt(dim, &d)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "shape ", JsonSnippet(*shape_it),
                         " must hold non-negative integers, got ", JsonSnippet(dim)));
      }
      view.shape.push_back(static_cast<int64_t>(d));
    }
    uint64_t numel = 0;
    uint64_t needed = 0;
    if (!CheckedNumel(view.shape, &numel) ||
        __builtin_mul_overflow(numel, static_cast<uint64_t>(DtypeSize(view.dtype)), &needed)) {
      return absl::InvalidArgumentError(absl::StrCat(where, "shape ", ShapeString(view.shape),
                                                     " has too many elements (overflow)"));
    }

    // data_offsets
    const auto off_it = value.find("data_offsets");
    if (off_it == value.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "missing \"data_offsets\""));
    }
    uint64_t begin = 0, end = 0;
    if (!off_it->is_array() || off_it->size() != 2 || !AsNonNegativeInt((*off_it)[0], &begin) ||
        !AsNonNegativeInt((*off_it)[1], &end)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "data_offsets must be [begin, end] with non-negative integers, got ",
                       JsonSnippet(*off_it)));
    }
    if (begin > end) {
      return absl::InvalidArgumentError(absl::StrCat(where, "data_offsets [", begin, ", ", end,
                                                     "] has begin after end"));
    }
    if (end > data.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "data_offsets [", begin, ", ", end, "] run past the end of the data (",
          data.size(), " bytes after the header)"));
    }
    if (end - begin != needed) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "data_offsets [", begin, ", ", end, "] hold ", end - begin, " bytes, but ",
          AbslName(view.dtype), " shape ", ShapeString(view.shape), " needs ", needed));
    }
    view.data = data_base + begin;
    view.nbytes = static_cast<size_t>(end - begin);
    entries.push_back({begin, end, tensors.size()});
    tensors.push_back(std::move(view));
  }

  // Order by position, then check that no two non-empty tensors share bytes.
  std::sort(entries.begin(), entries.end(), [&](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return tensors[a.index].name < tensors[b.index].name;
  });
  const Entry* previous = nullptr;  // the non-empty tensor reaching furthest so far
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (previous != nullptr && e.begin < previous->end) {
      return absl::InvalidArgumentError(absl::StrCat(
          p, ": tensor ", Quote(tensors[e.index].name), ": data_offsets [", e.begin, ", ",
          e.end, "] overlap tensor ", Quote(tensors[previous->index].name), " at [",
          previous->begin, ", ", previous->end, "]"));
    }
    previous = &e;
  }
  tensors_.reserve(tensors.size());
  for (const Entry& e : entries) {
    tensors_.push_back(std::move(tensors[e.index]));
    tensors_.back().file = &path_;
  }
  return absl::OkStatus();
}

const TensorView* SafetensorsFile::Find(absl::string_view name) const {
  for (const TensorView& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------
// TensorArchive

absl::Status TensorArchive::Add(std::unique_ptr<SafetensorsFile> file) {
  for (const TensorView& t : file->tensors()) {
    auto [it, inserted] = by_name_.emplace(t.name, &t);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          source_, ": tensor ", Quote(t.name), " is defined in both ", *it->second->file,
          " and ", file->path()));
    }
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TensorArchive>> TensorArchive::OpenFile(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::unique_ptr<TensorArchive> archive(new TensorArchive());
  archive->source_ = path;
  absl::Status status = archive->Add(*std::move(file));
  if (!status.ok()) return status;
  return archive;
}

absl::StatusOr<std::unique_ptr<TensorArchive>> TensorArchive::OpenIndex(
    const std::string& index_json_path) {
  const std::string& p = index_json_path;
  // Read the (small) index.
  std::string text;
  {
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      const std::string msg = absl::StrCat(p, ": cannot open shard index: ", ErrnoText(err));
      if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(msg);
      return absl::InvalidArgumentError(msg);
    }
    char buf[65536];
    while (true) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        return absl::InvalidArgumentError(absl::StrCat(p, ": cannot read: ", ErrnoText(err)));
      }
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
      if (text.size() > SafetensorsFile::kMaxHeaderBytes) {
        ::close(fd);
        return absl::InvalidArgumentError(absl::StrCat(p, ": shard index is larger than ",
                                                       SafetensorsFile::kMaxHeaderBytes,
                                                       " bytes"));
      }
    }
    ::close(fd);
  }
  JsonParseResult parsed = ParseJsonStrict(text);
  if (parsed.value.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(p, ": shard index is not valid JSON"));
  }
  if (!parsed.duplicate_error.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ": shard index is ambiguous: ", parsed.duplicate_error));
  }
  const json& root = parsed.value;
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(p, ": shard index must be a JSON object"));
  }
  const auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ": shard index needs a \"weight_map\" object {tensor: shard file}"));
  }
  if (wm->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(p, ": weight_map is empty"));
  }
  // shard file -> tensors it should hold (ordered for deterministic messages).
  std::map<std::string, std::vector<std::string>> shards;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(p, ": weight_map entry for tensor ", Quote(it.key()),
                       " must be a shard file name, got ", JsonSnippet(it.value())));
    }
    const std::string& shard = it.value().get_ref<const std::string&>();
    const bool bad_name = shard.empty() || shard.front() == '/' || shard == ".." ||
                          shard.rfind("../", 0) == 0 ||
                          shard.find("/../") != std::string::npos ||
                          (shard.size() >= 3 && shard.compare(shard.size() - 3, 3, "/..") == 0);
    if (bad_name) {
      return absl::InvalidArgumentError(
          absl::StrCat(p, ": weight_map puts tensor ", Quote(it.key()), " in shard ",
                       Quote(shard), ", which is not a relative path inside the model folder"));
    }
    shards[shard].push_back(it.key());
  }

  std::unique_ptr<TensorArchive> archive(new TensorArchive());
  archive->source_ = p;
  const std::string dir = DirName(p);
  std::map<std::string, const std::string*> shard_paths;  // shard name -> opened path
  for (const auto& [shard, names] : shards) {
    const std::string shard_path = JoinPath(dir, shard);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(shard_path);
    if (!file.ok()) {
      if (absl::IsNotFound(file.status())) {
        return absl::NotFoundError(absl::StrCat(
            p, ": shard ", Quote(shard), " (holding tensor ", Quote(names.front()),
            names.size() > 1 ? absl::StrCat(" and ", names.size() - 1, " more") : std::string(),
            ") does not exist: ", shard_path));
      }
      return file.status();
    }
    shard_paths[shard] = &(*file)->path();
    absl::Status status = archive->Add(*std::move(file));
    if (!status.ok()) return status;
  }
  for (const auto& [shard, names] : shards) {
    const std::string* shard_path = shard_paths[shard];
    for (const std::string& name : names) {
      const TensorView* t = archive->Find(name);
      if (t == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(p, ": weight_map puts tensor ", Quote(name), " in shard ", Quote(shard),
                         ", but no shard defines it"));
      }
      if (t->file != shard_path) {
        return absl::InvalidArgumentError(
            absl::StrCat(p, ": weight_map puts tensor ", Quote(name), " in shard ", Quote(shard),
                         ", but it is defined in ", *t->file));
      }
    }
  }
  return archive;
}

absl::StatusOr<std::unique_ptr<TensorArchive>> TensorArchive::OpenInDir(
    const std::string& dir, const std::string& base_name) {
  const std::string single = JoinPath(dir, base_name);
  if (FileExists(single)) return OpenFile(single);
  const std::string index = single + ".index.json";
  if (FileExists(index)) return OpenIndex(index);
  return absl::NotFoundError(absl::StrCat(dir, ": found neither ", base_name, " nor ",
                                          base_name, ".index.json"));
}

absl::StatusOr<std::unique_ptr<TensorArchive>> TensorArchive::FromOwnedBuffer(std::string source,
                                                                              std::string bytes) {
  std::unique_ptr<TensorArchive> archive(new TensorArchive());
  archive->source_ = source;
  // Parsed where the bytes stay: the views point into this heap string, never moved again.
  archive->owned_bytes_ = std::make_unique<const std::string>(std::move(bytes));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::FromBuffer(std::move(source), *archive->owned_bytes_);
  if (!file.ok()) return file.status();
  absl::Status status = archive->Add(*std::move(file));
  if (!status.ok()) return status;
  return archive;
}

const TensorView* TensorArchive::Find(absl::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> TensorArchive::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& entry : by_name_) names.push_back(entry.first);
  return names;
}

absl::StatusOr<const TensorView*> TensorArchive::Expect(absl::string_view name,
                                                        absl::Span<const int64_t> shape) const {
  const TensorView* t = Find(name);
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": missing tensor ", Quote(name),
                                                   " (expected shape ", ShapeString(shape), ")"));
  }
  if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(*t->file, ": tensor ", Quote(name),
                                                   " has shape ", ShapeString(t->shape),
                                                   ", expected ", ShapeString(shape)));
  }
  return t;
}

absl::Status TensorArchive::CheckNoUnexpected(
    const absl::flat_hash_set<std::string>& used) const {
  constexpr size_t kMaxListed = 10;
  std::vector<std::string> unexpected;
  size_t count = 0;
  for (const auto& entry : by_name_) {
    if (used.contains(entry.first)) continue;
    ++count;
    if (unexpected.size() < kMaxListed) unexpected.push_back(Quote(entry.first));
  }
  if (count == 0) return absl::OkStatus();
  std::string list = absl::StrJoin(unexpected, ", ");
  if (count > unexpected.size()) {
    absl::StrAppend(&list, ", ... and ", count - unexpected.size(), " more");
  }
  return absl::InvalidArgumentError(absl::StrCat(source_, ": ", count, " unexpected tensor",
                                                 count == 1 ? "" : "s", ": ", list));
}

int64_t TensorArchive::total_bytes() const {
  int64_t total = 0;
  for (const auto& entry : by_name_) total += static_cast<int64_t>(entry.second->nbytes);
  return total;
}

// ---------------------------------------------------------------------------------------
// Writer

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) {
      if (!ValidUtf8(key) || !ValidUtf8(value)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": metadata entry ", Quote(key), " is not valid UTF-8"));
      }
      meta[key] = value;
    }
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || !ValidUtf8(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": invalid tensor name ", Quote(t.name)));
    }
    if (!seen.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor ", Quote(t.name), " is given twice"));
    }
    uint64_t numel = 0, needed = 0;
    if (!CheckedNumel(t.shape, &numel) ||
        __builtin_mul_overflow(numel, static_cast<uint64_t>(DtypeSize(t.dtype)), &needed)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", Quote(t.name),
                                                     ": invalid shape ", ShapeString(t.shape)));
    }
    if (needed != t.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor ", Quote(t.name), ": ", AbslName(t.dtype), " shape ",
          ShapeString(t.shape), " needs ", needed, " bytes, got ", t.bytes.size()));
    }
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(DtypeName(t.dtype));
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + needed};
    header[t.name] = std::move(entry);
    offset += needed;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::string prefix(8, '\0');
  const uint64_t len = header_text.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((len >> (8 * i)) & 0xFF);

  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat(path, ": cannot create ", tmp, ": ", ErrnoText(errno)));
  }
  auto write_all = [fd](const char* p, size_t n) -> bool {
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  bool ok = write_all(prefix.data(), prefix.size()) &&
            write_all(header_text.data(), header_text.size());
  for (size_t i = 0; ok && i < tensors.size(); ++i) {
    ok = write_all(tensors[i].bytes.data(), tensors[i].bytes.size());
  }
  int err = ok ? 0 : errno;
  if (ok && ::fsync(fd) != 0) {
    ok = false;
    err = errno;
  }
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed: ", ErrnoText(err)));
  }
  return absl::OkStatus();
}

}  // namespace embedserve::weights
