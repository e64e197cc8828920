// Reading the families' JSON config files: the file itself (a regular file under a size cap,
// never a FIFO or a device) and typed fields whose errors name the file and the field path.
// One reader for every family. Torch-free.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace embedserve::models::config_json {

using nlohmann::json;

// The most a config file may hold (tokenizer.json files are read elsewhere).
inline constexpr int64_t kMaxConfigBytes = 16 << 20;

// The bytes of `path`: NOT_FOUND if it does not exist, INVALID_ARGUMENT if it is not a
// regular file (a FIFO, a device, a directory; symlinks are followed) or is over `max_bytes`.
// Opening never blocks.
absl::StatusOr<std::string> ReadConfigFile(const std::string& path,
                                           int64_t max_bytes = kMaxConfigBytes);

// "<source>: <field>: <why>" as INVALID_ARGUMENT.
absl::Status Bad(const std::string& source, const std::string& field, const std::string& why);
// "where.key", or "key" when `where` is empty.
std::string FieldPath(const std::string& where, const char* key);

// What a JSON null in a field means.
enum class Null { kAbsent, kError };

// obj[key] into `out` when present: an integer in [min_value, max_value], a number in
// (min_exclusive, max], a string. Absent leaves `out` as it is. Errors name
// FieldPath(where, key) in `source`.
absl::Status ReadInt(const json& obj, const char* key, const std::string& source,
                     const std::string& where, int min_value, int* out,
                     int max_value = 1 << 24, Null null = Null::kAbsent);
absl::Status ReadDouble(const json& obj, const char* key, const std::string& source,
                        const std::string& where, double min_exclusive, double max, double* out,
                        Null null = Null::kAbsent);
absl::Status ReadString(const json& obj, const char* key, const std::string& source,
                        const std::string& where, std::string* out);

}  // namespace embedserve::models::config_json
