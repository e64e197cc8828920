#include "server/sources/http_client.h"

#include <curl/curl.h>

#include <cctype>
#include <memory>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace embedserve::sources::internal {
namespace {

constexpr size_t kErrorBodyCap = 64 << 10;

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// State shared by curl's callbacks during one transfer.
struct Transfer {
  const HttpRequest* request = nullptr;
  HttpResponse response;
  bool too_large = false;
  bool sink_refused = false;
};

// Called once per header line, for every response including redirects and 100-continue;
// a status line starts a new response.
size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  absl::string_view line(data, n);
  line = absl::StripTrailingAsciiWhitespace(line);
  if (absl::StartsWith(line, "HTTP/")) {
    t->response.headers.clear();
    t->response.body.clear();
    const size_t space = line.find(' ');
    long status = 0;
    if (space != absl::string_view::npos) {
      absl::string_view code = line.substr(space + 1, 3);
      int parsed = 0;
      if (absl::SimpleAtoi(code, &parsed)) status = parsed;
    }
    t->response.status = status;
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos || colon == 0) return n;
  std::string name = absl::AsciiStrToLower(line.substr(0, colon));
  absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  t->response.headers[name] = std::string(value);
  return n;
}

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  const long status = t->response.status;
  const bool success = status >= 200 && status < 300;
  if (success && t->request->on_body) {
    if (!t->request->on_body(t->response, data, n)) {
      t->sink_refused = true;
      return 0;  // makes curl stop with CURLE_WRITE_ERROR
    }
    return n;
  }
  const size_t cap = success ? t->request->max_body_bytes : kErrorBodyCap;
  if (t->response.body.size() + n > cap) {
    if (success) {
      t->too_large = true;
      return 0;
    }
    t->response.body.append(data, cap - t->response.body.size());  // keep the head
    return n;
  }
  t->response.body.append(data, n);
  return n;
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

std::string HttpResponse::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

absl::StatusOr<HttpResponse> Fetch(const HttpRequest& request) {
  GlobalInitOnce();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return absl::InternalError("libcurl could not create a handle");
  CURL* c = curl.get();

  Transfer t;
  t.request = &request;
  char error_buffer[CURL_ERROR_SIZE] = {0};

  std::unique_ptr<curl_slist, SlistDeleter> header_list;
  for (const std::string& h : request.headers) {
    curl_slist* appended = curl_slist_append(header_list.get(), h.c_str());
    if (appended == nullptr) return absl::InternalError("libcurl could not build headers");
    header_list.release();
    header_list.reset(appended);
  }

  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_USERAGENT, "embedserve/0.1 (libcurl)");
  // The hub compresses text files; ask for identity so sizes and hashes are of the file.
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, nullptr);
  if (header_list) curl_easy_setopt(c, CURLOPT_HTTPHEADER, header_list.get());
  if (request.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (request.method != "GET") {
    return absl::InvalidArgumentError(absl::StrCat("unsupported HTTP method ", request.method));
  }
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  // Custom Authorization headers are not sent on to another host after a redirect (a
  // signed CDN URL must not see the token); this is libcurl's default, made explicit.
  curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(request.connect_timeout_s));
  if (request.total_timeout_s > 0) {
    curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(request.total_timeout_s));
  }
  if (request.stall_timeout_s > 0) {
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(request.stall_timeout_s));
  }
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);

  const CURLcode rc = curl_easy_perform(c);
  char* effective = nullptr;
  if (curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective) {
    t.response.effective_url = effective;
  }
  long code = 0;
  if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code != 0) {
    t.response.status = code;
  }
  if (rc == CURLE_OK) return std::move(t.response);

  const std::string detail = error_buffer[0] ? error_buffer : curl_easy_strerror(rc);
  const std::string url = UrlForMessage(request.url);
  if (t.sink_refused) return absl::CancelledError(absl::StrCat(url, ": ", detail));
  if (t.too_large) {
    return absl::ResourceExhaustedError(absl::StrCat(
        url, ": response body larger than ", request.max_body_bytes, " bytes"));
  }
  if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
    return absl::InvalidArgumentError(absl::StrCat(url, ": ", detail));
  }
  return absl::UnavailableError(absl::StrCat(url, ": ", detail));
}

std::string UrlEscape(const std::string& s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' ||
        (keep_slash && ch == '/')) {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back('%');
      out.push_back(kHex[ch >> 4]);
      out.push_back(kHex[ch & 15]);
    }
  }
  return out;
}

std::string UrlForMessage(const std::string& url) { return url.substr(0, url.find('?')); }

std::string UrlOrigin(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return "";
  const size_t host_end = url.find_first_of("/?#", scheme_end + 3);
  return absl::AsciiStrToLower(url.substr(0, host_end));
}

}  // namespace embedserve::sources::internal
