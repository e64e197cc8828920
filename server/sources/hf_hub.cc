// The downloading half of the hub resolver: the revision API, per-file metadata (HEAD on
// resolve/), resumable checked downloads into blobs/, and the snapshot links and refs.
#include "server/sources/hf_hub.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "server/sources/hf_cache_internal.h"
#include "server/sources/http_client.h"

namespace embedserve::sources {
namespace {

namespace fs = std::filesystem;
using internal::Fetch;
using internal::HttpRequest;
using internal::HttpResponse;
using internal::Sanitize;

std::string ErrnoText(const std::string& what, const std::string& path) {
  return absl::StrCat(what, " ", path, ": ", std::strerror(errno));
}

// Options with every "unset" field filled from the environment.
struct Resolved {
  std::string cache_dir;
  bool offline = false;
  std::string endpoint;
  std::string token;
  std::vector<FileWant> files;
  SourceOptions raw;
};

Resolved ResolveOptions(const SourceOptions& o) {
  Resolved r;
  r.raw = o;
  r.cache_dir = o.cache_dir.empty() ? HubCacheDir() : o.cache_dir;
  while (r.cache_dir.size() > 1 && r.cache_dir.back() == '/') r.cache_dir.pop_back();
  r.offline = o.offline.has_value() ? *o.offline : OfflineFromEnv();
  r.endpoint = o.endpoint.empty() ? EndpointFromEnv() : o.endpoint;
  while (!r.endpoint.empty() && r.endpoint.back() == '/') r.endpoint.pop_back();
  r.token = o.token.has_value() ? *o.token : TokenFromEnv();
  r.files = o.files;
  return r;
}

// ---------------------------------------------------------------------------------------
// Hub responses to statuses.

// What the hub said, from its X-Error-Code / X-Error-Message headers or a JSON body.
std::string HubDetail(const HttpResponse& r) {
  std::string msg = r.Header("x-error-message");
  if (msg.empty() && !r.body.empty()) {
    nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_string()) {
      msg = j["error"].get<std::string>();
    }
  }
  return msg.empty() ? "" : absl::StrCat(" (hub: ", Sanitize(msg), ")");
}

// The status for a non-2xx answer to a request about `what` ("file X" or "the revision
// listing") of `spec`.
absl::Status HubHttpError(const HttpResponse& r, const HfSpec& spec, const std::string& what,
                          const std::string& url, const Resolved& opt) {
  const std::string head =
      absl::StrCat(internal::SpecName(spec), ": ", what, ": HTTP ", r.status, " from ",
                   internal::UrlForMessage(url), HubDetail(r));
  const std::string code = r.Header("x-error-code");
  const std::string repo_url = absl::StrCat(opt.endpoint, "/", spec.repo_id);
  const std::string token_hint =
      opt.token.empty() ? "set HF_TOKEN to a token that can read it"
                        : "the token in use (HF_TOKEN or the saved login) was refused; use one "
                          "that can read it";
  switch (r.status) {
    case 401:
      return absl::UnauthenticatedError(absl::StrCat(
          head, ": the repo is private, gated, or does not exist; ", token_hint,
          " (https://huggingface.co/settings/tokens), and for a gated repo accept its terms at ",
          repo_url));
    case 403:
      return absl::PermissionDeniedError(absl::StrCat(
          head, ": access denied; for a gated repo accept its terms at ", repo_url, ", and ",
          token_hint));
    case 404:
      if (code == "RevisionNotFound") {
        return absl::NotFoundError(absl::StrCat(head, ": revision '", spec.revision,
                                                "' does not exist; check the name after '@'"));
      }
      if (code == "EntryNotFound") {
        return absl::NotFoundError(absl::StrCat(head, ": the file is not in the repo"));
      }
      return absl::NotFoundError(absl::StrCat(
          head, ": repo '", spec.repo_id, "' or revision '", spec.revision,
          "' not found; check the spelling, or ", token_hint, " if it is private"));
    case 429:
      return absl::UnavailableError(
          absl::StrCat(head, ": rate limited; retry later, or set HF_TOKEN for higher limits"));
    default:
      break;
  }
  if (r.status >= 500) {
    return absl::UnavailableError(absl::StrCat(head, ": the hub failed; retry later"));
  }
  return absl::InternalError(absl::StrCat(head, ": unexpected answer"));
}

// True for failures after which the cache may stand in for the hub.
bool CacheMayStandIn(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s);
}

std::vector<std::string> BaseHeaders(const Resolved& opt, bool with_auth) {
  std::vector<std::string> h;
  if (with_auth && !opt.token.empty()) h.push_back("Authorization: Bearer " + opt.token);
  return h;
}

// ---------------------------------------------------------------------------------------
// The revision listing.

struct RevisionInfo {
  std::string sha;
  std::set<std::string> files;
};

absl::StatusOr<RevisionInfo> FetchRevision(const HfSpec& spec, const Resolved& opt) {
  const std::string url =
      absl::StrCat(opt.endpoint, "/api/models/", spec.repo_id, "/revision/",
                   internal::UrlEscape(spec.revision, /*keep_slash=*/false));
  HttpRequest req;
  req.url = url;
  req.headers = BaseHeaders(opt, true);
  req.follow_redirects = true;  // a renamed repo redirects to its new name
  req.connect_timeout_s = opt.raw.connect_timeout_s;
  req.total_timeout_s = opt.raw.metadata_timeout_s;
  absl::StatusOr<HttpResponse> r = Fetch(req);
  if (!r.ok()) {
    return absl::Status(r.status().code(),
                        absl::StrCat(internal::SpecName(spec), ": cannot reach the hub: ",
                                     r.status().message(),
                                     "; check the network or HF_ENDPOINT, or set "
                                     "HF_HUB_OFFLINE=1 to use the cache only"));
  }
  if (r->status < 200 || r->status >= 300) {
    return HubHttpError(*r, spec, "revision listing", url, opt);
  }
  const std::string bad = absl::StrCat(internal::SpecName(spec), ": unexpected revision "
                                       "listing from ", url, ": ");
  nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InternalError(bad + "not a JSON object");
  RevisionInfo info;
  if (!j.contains("sha") || !j["sha"].is_string() ||
      !internal::IsCommitSha(j["sha"].get<std::string>())) {
    return absl::InternalError(bad + "no 40-hex \"sha\"");
  }
  info.sha = j["sha"].get<std::string>();
  if (!j.contains("siblings") || !j["siblings"].is_array()) {
    return absl::InternalError(bad + "no \"siblings\" array");
  }
  for (const auto& s : j["siblings"]) {
    if (!s.is_object() || !s.contains("rfilename") || !s["rfilename"].is_string()) continue;
    std::string name = s["rfilename"].get<std::string>();
    if (internal::IsSafeRelativePath(name)) info.files.insert(std::move(name));
  }
  return info;
}

// ---------------------------------------------------------------------------------------
// Per-file metadata: HEAD on resolve/<sha>/<file>, relative redirects followed, the
// absolute one (to the LFS/CDN storage) kept as the download URL.

struct FileMeta {
  std::string etag;
  int64_t size = -1;
  std::string download_url;
  bool send_auth = true;
};

std::string NormalizeEtag(std::string etag) {
  absl::string_view v = absl::StripAsciiWhitespace(etag);
  absl::ConsumePrefix(&v, "W/");
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return std::string(v);
}

bool IsSafeEtag(const std::string& etag) {
  if (etag.empty() || etag.size() > 200) return false;
  for (char c : etag) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return etag.front() != '.';
}

absl::StatusOr<FileMeta> FetchFileMeta(const HfSpec& spec, const std::string& sha,
                                       const std::string& file, const Resolved& opt) {
  const std::string what = absl::StrCat("file ", file);
  std::string url = absl::StrCat(opt.endpoint, "/", spec.repo_id, "/resolve/", sha, "/",
                                 internal::UrlEscape(file, /*keep_slash=*/true));
  const std::string origin = internal::UrlOrigin(opt.endpoint);
  for (int hop = 0; hop < 10; ++hop) {
    HttpRequest req;
    req.method = "HEAD";
    req.url = url;
    req.headers = BaseHeaders(opt, true);
    req.connect_timeout_s = opt.raw.connect_timeout_s;
    req.total_timeout_s = opt.raw.metadata_timeout_s;
    absl::StatusOr<HttpResponse> r = Fetch(req);
    if (!r.ok()) {
      return absl::Status(r.status().code(), absl::StrCat(internal::SpecName(spec), ": ", what,
                                                          ": ", r.status().message()));
    }
    const bool redirect = r->status >= 300 && r->status < 400;
    const std::string location = r->Header("location");
    if (redirect && absl::StartsWith(location, "/") && !absl::StartsWith(location, "//")) {
      url = origin + location;  // same host: a renamed repo or file; ask again there
      continue;
    }
    if (!redirect && (r->status < 200 || r->status >= 300)) {
      return HubHttpError(*r, spec, what, url, opt);
    }
    if (redirect && location.empty()) {
      return absl::InternalError(absl::StrCat(internal::SpecName(spec), ": ", what, ": HTTP ",
                                              r->status, " without Location from ", url));
    }
    FileMeta meta;
    std::string etag = r->Header("x-linked-etag");
    if (etag.empty()) etag = r->Header("etag");
    meta.etag = NormalizeEtag(etag);
    if (!IsSafeEtag(meta.etag)) {
      return absl::InternalError(absl::StrCat(
          internal::SpecName(spec), ": ", what, ": the hub sent no usable ETag ('",
          Sanitize(meta.etag, 80), "') from ", url,
          "; a proxy may be rewriting responses, check HF_ENDPOINT and proxy settings"));
    }
    std::string size = r->Header("x-linked-size");
    if (size.empty() && !redirect) size = r->Header("content-length");
    int64_t parsed = -1;
    if (!size.empty() && (!absl::SimpleAtoi(size, &parsed) || parsed < 0)) {
      return absl::InternalError(absl::StrCat(internal::SpecName(spec), ": ", what,
                                              ": bad size '", Sanitize(size, 40), "' from ",
                                              url));
    }
    meta.size = parsed;
    meta.download_url = redirect ? location : url;
    if (redirect && !absl::StartsWith(location, "http://") &&
        !absl::StartsWith(location, "https://")) {
      return absl::InternalError(absl::StrCat(internal::SpecName(spec), ": ", what,
                                              ": unusable redirect '", Sanitize(location, 120),
                                              "' from ", url));
    }
    // A signed storage URL on another host must not see the token.
    meta.send_auth = internal::UrlOrigin(meta.download_url) == origin;
    return meta;
  }
  return absl::InternalError(absl::StrCat(internal::SpecName(spec), ": ", what,
                                          ": too many redirects from ", opt.endpoint));
}

// ---------------------------------------------------------------------------------------
// Files and locks.

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

// Writes `content` to `path` through a temporary file and a rename.
absl::Status WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = absl::StrCat(path, ".", ::getpid(), ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = absl::InternalError(ErrnoText("cannot rename to", path));
    ::unlink(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

// Points snapshots/<sha>/<file> at blobs/<etag> with a relative link, replacing whatever
// was there atomically.
absl::Status LinkIntoSnapshot(const std::string& repo_dir, const std::string& sha,
                              const std::string& file, const std::string& etag) {
  const std::string pointer = absl::StrCat(repo_dir, "/snapshots/", sha, "/", file);
  absl::Status s = MakeDirs(fs::path(pointer).parent_path().string());
  if (!s.ok()) return s;
  std::string target;
  const size_t depth = std::count(file.begin(), file.end(), '/') + 2;  // + <sha>, snapshots
  for (size_t i = 0; i < depth; ++i) target += "../";
  target += "blobs/" + etag;
  const std::string tmp = absl::StrCat(pointer, ".", ::getpid(), ".link");
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0) {
    return absl::InternalError(ErrnoText("cannot create symlink", tmp));
  }
  if (::rename(tmp.c_str(), pointer.c_str()) != 0) {
    absl::Status err = absl::InternalError(ErrnoText("cannot rename symlink to", pointer));
    ::unlink(tmp.c_str());
    return err;
  }
  return absl::OkStatus();
}

absl::Status UpdateRef(const std::string& repo_dir, const std::string& revision,
                       const std::string& sha) {
  if (revision == sha) return absl::OkStatus();
  absl::StatusOr<std::string> current = internal::ReadRef(repo_dir, revision);
  if (current.ok() && *current == sha) return absl::OkStatus();
  const std::string path = absl::StrCat(repo_dir, "/refs/", revision);
  absl::Status s = MakeDirs(fs::path(path).parent_path().string());
  if (!s.ok()) return s;
  return WriteFileAtomically(path, sha);  // no newline, as huggingface_hub writes it
}

// An exclusive flock(2) on a lock file, the same file huggingface_hub locks, so a Python
// process and this one do not download the same blob into the same .incomplete at once.
class BlobLock {
 public:
  static absl::StatusOr<std::unique_ptr<BlobLock>> Acquire(const std::string& path) {
    absl::Status s = MakeDirs(fs::path(path).parent_path().string());
    if (!s.ok()) return s;
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return absl::InternalError(ErrnoText("cannot open lock file", path));
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) {
        absl::Status err = absl::InternalError(ErrnoText("cannot lock", path));
        ::close(fd);
        return err;
      }
    }
    return std::unique_ptr<BlobLock>(new BlobLock(fd));
  }
  ~BlobLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  explicit BlobLock(int fd) : fd_(fd) {}
  int fd_;
};

// ---------------------------------------------------------------------------------------
// Hashing.

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { Reset(); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Reset() { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  void Update(const char* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
  std::string HexDigest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, digest, &len);
    std::string out;
    for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&out, "%02x", digest[i]);
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// Feeds the first `n` bytes of `fd` to `hash`.
absl::Status HashPrefix(int fd, int64_t n, Sha256& hash, const std::string& path) {
  std::vector<char> buf(1 << 20);
  int64_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, buf.data(),
                                static_cast<size_t>(std::min<int64_t>(buf.size(), n - done)),
                                done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return absl::InternalError(ErrnoText("cannot read", path));
    hash.Update(buf.data(), static_cast<size_t>(got));
    done += got;
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Progress.

std::string HumanBytes(double b) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  if (u == 0) return absl::StrFormat("%.0f %s", b, kUnits[u]);
  return absl::StrFormat("%.1f %s", b, kUnits[u]);
}

// The default reporter: nothing for a download that ends within its first second, then a
// line per report.
ProgressCallback StderrProgress() {
  auto printed = std::make_shared<std::set<std::string>>();
  return [printed](const DownloadProgress& p) {
    const std::string key = p.repo_id + "/" + p.file;
    if (p.finished && printed->count(key) == 0) return;
    printed->insert(key);
    std::string line = absl::StrCat("embedserve: ", p.finished ? "downloaded " : "downloading ",
                                    key, ": ", HumanBytes(static_cast<double>(p.bytes_done)));
    if (p.bytes_total > 0) {
      absl::StrAppend(&line, " of ", HumanBytes(static_cast<double>(p.bytes_total)),
                      absl::StrFormat(" (%.0f%%)", 100.0 * p.bytes_done / p.bytes_total));
    }
    absl::StrAppend(&line, ", ", HumanBytes(p.bytes_per_second), "/s\n");
    std::fputs(line.c_str(), stderr);
    if (p.finished) printed->erase(key);
  };
}

// ---------------------------------------------------------------------------------------
// Download of one blob.

// Downloads `meta.download_url` into `incomplete` (resuming what it holds), checks size and
// sha256, and renames it to `blob`. The caller holds the blob's lock.
absl::Status DownloadBlob(const HfSpec& spec, const std::string& file, const FileMeta& meta,
                          const std::string& incomplete, const std::string& blob,
                          const Resolved& opt, const ProgressCallback& progress) {
  const std::string name = internal::SpecName(spec);
  const int fd = ::open(incomplete.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(ErrnoText("cannot open", incomplete));
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::InternalError(ErrnoText("cannot stat", incomplete));
  int64_t have = st.st_size;
  if (meta.size >= 0 && have > meta.size) {
    if (::ftruncate(fd, 0) != 0) {
      return absl::InternalError(ErrnoText("cannot truncate", incomplete));
    }
    have = 0;
  }
  Sha256 hash;
  absl::Status s = HashPrefix(fd, have, hash, incomplete);
  if (!s.ok()) return s;

  using Clock = std::chrono::steady_clock;
  const Clock::time_point started = Clock::now();
  const int64_t resumed_from = have;
  Clock::time_point last_report = started;
  DownloadProgress report;
  report.repo_id = spec.repo_id;
  report.file = file;
  report.bytes_total = meta.size;
  auto emit = [&](bool finished) {
    const double secs = std::chrono::duration<double>(Clock::now() - started).count();
    report.bytes_done = have;
    report.bytes_per_second = secs > 0 ? (have - resumed_from) / secs : 0;
    report.finished = finished;
    if (progress) progress(report);
  };

  absl::Status write_error;
  int retries_left = opt.raw.max_retries;
  while (meta.size < 0 || have < meta.size) {
    const int64_t attempt_start = have;
    bool first_chunk = true;
    HttpRequest req;
    req.url = meta.download_url;
    req.headers = BaseHeaders(opt, meta.send_auth);
    if (have > 0) req.headers.push_back(absl::StrCat("Range: bytes=", have, "-"));
    req.follow_redirects = true;
    req.connect_timeout_s = opt.raw.connect_timeout_s;
    req.stall_timeout_s = opt.raw.stall_timeout_s;
    req.on_body = [&](const HttpResponse& head, const char* data, size_t n) -> bool {
      if (first_chunk) {
        first_chunk = false;
        if (head.status == 206) {
          // "bytes START-END/TOTAL" must start where the file ends.
          const std::string content_range = head.Header("content-range");
          absl::string_view range = content_range;
          int64_t start = -1;
          if (absl::ConsumePrefix(&range, "bytes ")) {
            (void)absl::SimpleAtoi(range.substr(0, range.find('-')), &start);
          }
          if (start != have) {
            write_error = absl::InternalError(absl::StrCat(
                name, ": file ", file, ": asked for bytes from ", have, ", got a range '",
                Sanitize(content_range, 80), "'"));
            return false;
          }
        } else if (have > 0) {
          // The server ignored the Range: start over.
          if (::ftruncate(fd, 0) != 0) {
            write_error = absl::InternalError(ErrnoText("cannot truncate", incomplete));
            return false;
          }
          have = 0;
          hash.Reset();
        }
      }
      if (meta.size >= 0 && have + static_cast<int64_t>(n) > meta.size) {
        write_error = absl::InternalError(absl::StrCat(
            name, ": file ", file, ": the server sent more than the ", meta.size,
            " bytes it announced"));
        return false;
      }
      size_t off = 0;
      while (off < n) {
        const ssize_t w = ::pwrite(fd, data + off, n - off, have);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          write_error = absl::InternalError(ErrnoText("cannot write", incomplete));
          return false;
        }
        hash.Update(data + off, static_cast<size_t>(w));
        off += static_cast<size_t>(w);
        have += w;
      }
      const Clock::time_point now = Clock::now();
      if (now - last_report >= std::chrono::seconds(1)) {
        last_report = now;
        emit(false);
      }
      return true;
    };

    absl::StatusOr<HttpResponse> r = Fetch(req);
    if (!write_error.ok()) return write_error;
    absl::Status attempt_error;
    if (r.ok()) {
      if (r->status == 416 && have > 0) {
        // The range is past the end: what we hold is not a prefix of this file.
        if (::ftruncate(fd, 0) != 0) {
          return absl::InternalError(ErrnoText("cannot truncate", incomplete));
        }
        have = 0;
        hash.Reset();
        attempt_error = absl::UnavailableError("HTTP 416 on resume; starting over");
      } else if (r->status >= 500 || r->status == 429) {
        attempt_error = HubHttpError(*r, spec, "file " + file, meta.download_url, opt);
      } else if (r->status < 200 || r->status >= 300) {
        return HubHttpError(*r, spec, "file " + file, meta.download_url, opt);
      } else if (meta.size < 0 || have == meta.size) {
        break;  // complete
      } else {
        attempt_error = absl::UnavailableError(absl::StrCat(
            "the transfer ended after ", have, " of ", meta.size, " bytes"));
      }
    } else {
      attempt_error = r.status();
    }
    if (!absl::IsUnavailable(attempt_error)) {
      return absl::Status(attempt_error.code(), absl::StrCat(name, ": file ", file, ": ",
                                                             attempt_error.message()));
    }
    if (have > attempt_start) retries_left = opt.raw.max_retries;  // progress was made
    if (retries_left-- <= 0) {
      return absl::UnavailableError(absl::StrCat(
          name, ": file ", file, ": download failed after ", opt.raw.max_retries,
          " retries (", attempt_error.message(), "); ", have, " bytes are kept in ", incomplete,
          " and the next run resumes from there"));
    }
    std::fprintf(stderr, "embedserve: %s: %s: %s; resuming at byte %lld\n", name.c_str(),
                 file.c_str(), std::string(attempt_error.message()).c_str(),
                 static_cast<long long>(have));
    std::this_thread::sleep_for(std::chrono::milliseconds(opt.raw.retry_delay_ms));
  }
  emit(true);

  if (internal::IsSha256Hex(meta.etag)) {
    const std::string got = hash.HexDigest();
    if (got != meta.etag) {
      ::unlink(incomplete.c_str());  // a retry must start from scratch
      return absl::DataLossError(absl::StrCat(
          name, ": file ", file, ": downloaded content has sha256 ", got,
          " but the hub's ETag says ", meta.etag,
          "; the file was not installed; retry, and if it persists check proxies between "
          "this host and ", opt.endpoint));
    }
  }
  if (::fsync(fd) != 0) return absl::InternalError(ErrnoText("cannot sync", incomplete));
  if (::rename(incomplete.c_str(), blob.c_str()) != 0) {
    return absl::InternalError(ErrnoText("cannot rename to", blob));
  }
  return absl::OkStatus();
}

// Makes snapshots/<sha>/<file> exist, downloading its blob when the cache lacks it.
absl::Status EnsureFile(const HfSpec& spec, const std::string& sha, const std::string& file,
                        const Resolved& opt, const ProgressCallback& progress) {
  const std::string repo_dir = internal::RepoDir(opt.cache_dir, spec.repo_id);
  if (internal::IsRegularFile(absl::StrCat(repo_dir, "/snapshots/", sha, "/", file))) {
    return absl::OkStatus();  // cached earlier, by us or by Python
  }
  absl::StatusOr<FileMeta> meta = FetchFileMeta(spec, sha, file, opt);
  if (!meta.ok()) return meta.status();
  const std::string blob = absl::StrCat(repo_dir, "/blobs/", meta->etag);
  if (!internal::IsRegularFile(blob)) {
    absl::Status s = MakeDirs(repo_dir + "/blobs");
    if (!s.ok()) return s;
    absl::StatusOr<std::unique_ptr<BlobLock>> lock = BlobLock::Acquire(absl::StrCat(
        opt.cache_dir, "/.locks/", RepoFolderName(spec.repo_id), "/", meta->etag, ".lock"));
    if (!lock.ok()) return lock.status();
    if (!internal::IsRegularFile(blob)) {  // another process may have finished it meanwhile
      s = DownloadBlob(spec, file, *meta, blob + ".incomplete", blob, opt, progress);
      if (!s.ok()) return s;
    }
  }
  return LinkIntoSnapshot(repo_dir, sha, file, meta->etag);
}

}  // namespace

namespace {

absl::StatusOr<std::string> ResolveOnline(const HfSpec& spec, const Resolved& opt,
                                          const ProgressCallback& progress) {
  const std::string name = internal::SpecName(spec);
  absl::StatusOr<RevisionInfo> info = FetchRevision(spec, opt);
  if (!info.ok()) return info.status();
  const std::string repo_dir = internal::RepoDir(opt.cache_dir, spec.repo_id);
  const std::string snapshot = absl::StrCat(repo_dir, "/snapshots/", info->sha);
  auto has = [&](const std::string& f) { return info->files.count(f) > 0; };
  const std::vector<FileWant> wants =
      opt.files.empty() ? internal::DefaultFilesFor(has) : opt.files;
  absl::StatusOr<std::vector<std::string>> selected = internal::SelectFiles(
      wants, has, name, absl::StrCat("the repo at commit ", info->sha));
  if (!selected.ok()) return selected.status();

  std::deque<std::string> queue(selected->begin(), selected->end());
  std::set<std::string> queued(selected->begin(), selected->end());
  while (!queue.empty()) {
    const std::string file = queue.front();
    queue.pop_front();
    absl::Status s = EnsureFile(spec, info->sha, file, opt, progress);
    if (!s.ok()) return s;
    if (!internal::IsSafetensorsIndex(file)) continue;
    absl::StatusOr<std::vector<std::string>> shards =
        internal::ShardsOfIndex(snapshot + "/" + file, file);
    if (!shards.ok()) {
      return absl::Status(shards.status().code(),
                          absl::StrCat(name, ": ", shards.status().message()));
    }
    for (const std::string& shard : *shards) {
      if (!has(shard)) {
        return absl::NotFoundError(absl::StrCat(name, ": ", file, " names shard ", shard,
                                                " which the repo at commit ", info->sha,
                                                " does not have"));
      }
      if (queued.insert(shard).second) queue.push_back(shard);
    }
  }
  absl::Status s = UpdateRef(repo_dir, spec.revision, info->sha);
  if (!s.ok()) return s;
  return snapshot;
}

}  // namespace

absl::StatusOr<std::string> ResolveModelSource(const std::string& spec,
                                               const SourceOptions& options) {
  if (!IsHfSpec(spec)) {
    std::error_code ec;
    if (spec.empty() || !fs::is_directory(spec, ec)) {
      return absl::NotFoundError(absl::StrCat(
          "model source '", Sanitize(spec),
          "' is not a directory; give a model directory or hf:ORG/REPO[@REVISION]"));
    }
    return spec;
  }
  absl::StatusOr<HfSpec> parsed = ParseHfSpec(spec);
  if (!parsed.ok()) return parsed.status();
  const Resolved opt = ResolveOptions(options);
  if (opt.offline) return ResolveFromCache(*parsed, opt.cache_dir, opt.files);
  if (internal::IsCommitSha(parsed->revision)) {
    // A commit never changes: a complete snapshot of it needs no request.
    absl::StatusOr<std::string> cached = ResolveFromCache(*parsed, opt.cache_dir, opt.files);
    if (cached.ok()) return cached;
  }

  const ProgressCallback progress = options.progress ? options.progress : StderrProgress();
  absl::StatusOr<std::string> online = ResolveOnline(*parsed, opt, progress);
  if (online.ok() || !CacheMayStandIn(online.status())) return online;
  absl::StatusOr<std::string> cached = ResolveFromCache(*parsed, opt.cache_dir, opt.files);
  if (!cached.ok()) {
    return absl::Status(online.status().code(),
                        absl::StrCat(online.status().message(),
                                     " (and the cache cannot stand in: ",
                                     cached.status().message(), ")"));
  }
  std::fprintf(stderr, "embedserve: warning: %s; using the cached snapshot %s\n",
               std::string(online.status().message()).c_str(), cached->c_str());
  return cached;
}

}  // namespace embedserve::sources
