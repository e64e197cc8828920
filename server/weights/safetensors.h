// Torch-free safetensors reading (memory-mapped, strictly validated), sharded checkpoints
// (index json + shards) and an atomic writer for tests and checkpoint generators.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace embedserve::weights {

// The element types this reader understands (safetensors names: F32, F16, BF16, F64, I64,
// I32, I16, I8, U8, BOOL). Any other dtype in a file is rejected as INVALID_ARGUMENT.
enum class TensorDtype { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// The safetensors spelling ("F32", "BF16", "BOOL", ...).
std::string_view DtypeName(TensorDtype dtype);
// Bytes per element.
size_t DtypeSize(TensorDtype dtype);
// Parses a safetensors dtype name; false if unknown.
bool ParseDtypeName(std::string_view name, TensorDtype* out);

// One tensor inside a file. `data` points into the file's mapping (not necessarily aligned:
// copy or use memcpy-style access) and stays valid as long as the owning file lives.
struct TensorView {
  std::string name;
  TensorDtype dtype = TensorDtype::kF32;
  std::vector<int64_t> shape;  // empty: a scalar
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  const std::string* file = nullptr;  // the owning file's path (for messages)

  int64_t numel() const;
};

// "[64, 3, 16, 16]" (for messages).
std::string ShapeString(absl::Span<const int64_t> shape);

// One safetensors file, memory-mapped read-only for the object's lifetime (or an in-memory
// buffer, see FromBuffer). Construction validates the whole header: size limits, JSON
// object, known dtypes, non-negative shapes without overflow, offsets inside the data,
// byte counts matching shape x dtype, no overlapping tensors, no duplicate names. Errors are
// INVALID_ARGUMENT (NOT_FOUND for a missing file) naming the file and the tensor.
class SafetensorsFile {
 public:
  // Largest header accepted (the reference implementation's limit).
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses `bytes` in place (not copied, not owned: it must outlive the result). `name` is
  // used as the path in messages and TensorView::file.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBuffer(std::string name,
                                                                     absl::string_view bytes);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // In data-offset order.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr if absent.
  const TensorView* Find(absl::string_view name) const;

 private:
  SafetensorsFile() = default;
  absl::Status Parse(absl::string_view bytes);

  std::string path_;
  void* mapping_ = nullptr;  // non-null when this object owns an mmap
  size_t mapping_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: one safetensors file, or shards listed by a Hugging Face style index json
// ({"metadata": {...}, "weight_map": {tensor: shard file}}), seen as one set of tensors.
class TensorArchive {
 public:
  static absl::StatusOr<std::unique_ptr<TensorArchive>> OpenFile(const std::string& path);
  // Validates that every tensor in weight_map is in the shard it names, that shards don't
  // define the same tensor twice, and that shard names are plain relative paths.
  static absl::StatusOr<std::unique_ptr<TensorArchive>> OpenIndex(
      const std::string& index_json_path);
  // `dir`/`base_name` if it exists, else `dir`/`base_name`.index.json, else NOT_FOUND
  // naming both.
  static absl::StatusOr<std::unique_ptr<TensorArchive>> OpenInDir(const std::string& dir,
                                                                  const std::string& base_name);
  // One safetensors file held in memory (a converted checkpoint, see torch_bin.h): the archive
  // owns `bytes` for its lifetime; `source` names it in messages and TensorView::file.
  static absl::StatusOr<std::unique_ptr<TensorArchive>> FromOwnedBuffer(std::string source,
                                                                        std::string bytes);

  // The file or index this archive was opened from.
  const std::string& source() const { return source_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

  // nullptr if absent.
  const TensorView* Find(absl::string_view name) const;
  // Sorted.
  std::vector<std::string> Names() const;
  // The tensor, if present with exactly `shape`; INVALID_ARGUMENT
  // "<file>: tensor '<name>' has shape [..], expected [..]" or
  // "<source>: missing tensor '<name>' (expected shape [..])".
  absl::StatusOr<const TensorView*> Expect(absl::string_view name,
                                           absl::Span<const int64_t> shape) const;
  // INVALID_ARGUMENT listing (up to 10 of) the tensors not in `used`; OK if none.
  absl::Status CheckNoUnexpected(const absl::flat_hash_set<std::string>& used) const;
  // Sum of every tensor's nbytes.
  int64_t total_bytes() const;

 private:
  TensorArchive() = default;
  absl::Status Add(std::unique_ptr<SafetensorsFile> file);

  std::string source_;
  // The bytes of a FromOwnedBuffer archive (declared before files_, so it outlives them).
  std::unique_ptr<const std::string> owned_bytes_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*, std::less<>> by_name_;
};

// A tensor for WriteSafetensors: `bytes` is the raw little-endian data (numel x dtype size).
struct TensorToWrite {
  std::string name;
  TensorDtype dtype = TensorDtype::kF32;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes a safetensors file atomically (temporary file + rename). The header is padded with
// spaces to a multiple of 8 bytes; data is laid out in the given order. INVALID_ARGUMENT for
// bad input (duplicate or empty names, byte count mismatch), INTERNAL for I/O failures.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace embedserve::weights
