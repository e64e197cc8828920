// Structured logging: one line per event, `time=... level=... event=... key=value ...`, to
// stderr. Thread-safe; the level is process-wide.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace embedserve {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warning", "error"; false if unknown.
bool ParseLogLevel(absl::string_view name, LogLevel* level);
bool LogEnabled(LogLevel level);

// `fields` is already formatted as `key=value key2="quoted value"`.
void LogEvent(LogLevel level, absl::string_view event, absl::string_view fields = "");

// `text` when it is at most `max_bytes` long; else its first `max_bytes` bytes (cut back to
// a UTF-8 character boundary) and "...(N bytes)": for client-supplied strings that are logged,
// echoed in errors or used as labels, so none of them is unbounded.
std::string Abbreviate(absl::string_view text, size_t max_bytes);

// Quotes a value for a log field when it has spaces, quotes or is empty.
std::string LogQuote(absl::string_view value);

}  // namespace embedserve
