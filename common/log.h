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

// Quotes a value for a log field when it has spaces, quotes or is empty.
std::string LogQuote(absl::string_view value);

}  // namespace embedserve
