// Config files and their typed fields.
#include "server/models/config_json.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace embedserve::models::config_json {

absl::StatusOr<std::string> ReadConfigFile(const std::string& path, int64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": cannot open (missing)"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", std::strerror(error)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file (a config must be a plain file)"));
  }
  if (st.st_size > max_bytes) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.st_size,
                                                   " bytes, over the limit of ", max_bytes,
                                                   " for a config file"));
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // a file that shrank while read: what was there
    done += static_cast<size_t>(n);
  }
  close(fd);
  bytes.resize(done);
  return bytes;
}

absl::Status Bad(const std::string& source, const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", why));
}

std::string FieldPath(const std::string& where, const char* key) {
  return where.empty() ? std::string(key) : absl::StrCat(where, ".", key);
}

absl::Status ReadInt(const json& obj, const char* key, const std::string& source,
                     const std::string& where, int min_value, int* out, int max_value,
                     Null null) {
  if (!obj.contains(key) || (null == Null::kAbsent && obj.at(key).is_null())) {
    return absl::OkStatus();
  }
  const json& v = obj.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < min_value || v.get<int64_t>() > max_value) {
    return Bad(source, FieldPath(where, key),
               absl::StrCat("expected an integer >= ", min_value, ", got ", v.dump()));
  }
  *out = v.get<int>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& obj, const char* key, const std::string& source,
                        const std::string& where, double min_exclusive, double max, double* out,
                        Null null) {
  if (!obj.contains(key) || (null == Null::kAbsent && obj.at(key).is_null())) {
    return absl::OkStatus();
  }
  const json& v = obj.at(key);
  if (!v.is_number() || !(v.get<double>() > min_exclusive) || !(v.get<double>() <= max)) {
    return Bad(source, FieldPath(where, key),
               absl::StrCat("expected a number in (", min_exclusive, ", ", max, "], got ",
                            v.dump()));
  }
  *out = v.get<double>();
  return absl::OkStatus();
}

absl::Status ReadString(const json& obj, const char* key, const std::string& source,
                        const std::string& where, std::string* out) {
  if (!obj.contains(key) || obj.at(key).is_null()) return absl::OkStatus();
  const json& v = obj.at(key);
  if (!v.is_string()) {
    return Bad(source, FieldPath(where, key), "expected a string, got " + v.dump());
  }
  *out = v.get<std::string>();
  return absl::OkStatus();
}

}  // namespace embedserve::models::config_json
