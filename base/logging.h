// Structured logging: one JSON object per line on stderr (or a sink set by the process).
//   GANTRY_LOG(INFO, "step").Field("step", 10).Field("loss", 2.3);
// Each line carries "ts" (RFC3339 UTC, ms), "level", "msg", the process-wide context fields
// (job, rank, attempt, ... set once with SetLogContext) and the call's own fields.
// Thread-safe: each line is built privately and emitted with a single write().
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "base/status.h"

namespace gantry {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

std::string_view LogLevelName(LogLevel level);  // "debug" | "info" | "warning" | "error"
// Accepts debug, info, warn, warning, error, off (case-insensitive).
StatusOr<LogLevel> ParseLogLevel(std::string_view text);

// Minimum level emitted. Default: GANTRY_LOG_LEVEL (read once at first use) or info.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
inline bool LogEnabled(LogLevel level) { return level >= GetLogLevel(); }

// Process-wide context fields, added to every line after "msg", in insertion order.
// Setting an existing key replaces its value. Values are stored JSON-encoded.
void SetLogContext(std::string_view key, std::string_view value);
void SetLogContext(std::string_view key, int64_t value);
void ClearLogContext();

// Where finished lines go (each includes its trailing '\n'). nullptr restores stderr.
// The sink is called without any lock held; it must be thread-safe itself.
using LogSink = std::function<void(std::string_view line)>;
void SetLogSink(LogSink sink);

// JSON helpers shared by logging, metrics and HTTP handlers.
// Appends `s` as a quoted JSON string; invalid UTF-8 bytes become U+FFFD.
void AppendJsonString(std::string* out, std::string_view s);
// `s` with every byte that is not part of a valid UTF-8 sequence replaced by U+FFFD (what a
// protobuf string field or a JSON consumer accepts).
std::string ToValidUtf8(std::string_view s);
// Offset of the first byte of `s` that is not part of a valid UTF-8 sequence (overlong forms,
// surrogates and code points past U+10FFFF included), or npos.
size_t FirstInvalidUtf8(std::string_view s);
// Shortest round-trip form; NaN and infinities become the strings "NaN", "Infinity".
void AppendJsonNumber(std::string* out, double v);
// RFC3339 UTC timestamp with milliseconds, e.g. "2024-05-01T12:00:00.123Z".
std::string NowRfc3339();

// One log line under construction; written when destroyed (end of the full expression).
class LogLine {
 public:
  LogLine(LogLevel level, std::string_view msg, const char* file = nullptr, int line = 0);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  LogLine& Field(std::string_view key, std::string_view value);
  LogLine& Field(std::string_view key, const char* value) {
    return Field(key, std::string_view(value ? value : ""));
  }
  LogLine& Field(std::string_view key, const std::string& value) {
    return Field(key, std::string_view(value));
  }
  LogLine& Field(std::string_view key, bool value);
  LogLine& Field(std::string_view key, double value);
  LogLine& Field(std::string_view key, float value) { return Field(key, double(value)); }
  template <typename T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  LogLine& Field(std::string_view key, T value) {
    if constexpr (std::is_signed_v<T>) return FieldInt(key, int64_t(value));
    else return FieldUint(key, uint64_t(value));
  }
  // An error status as {"error": "CODE: message"} under `key`.
  LogLine& Field(std::string_view key, const Status& status);

 private:
  LogLine& FieldInt(std::string_view key, int64_t v);
  LogLine& FieldUint(std::string_view key, uint64_t v);
  void Key(std::string_view key);
  std::string buf_;
};

// A typed value for the function-style API below.
struct LogValue {
  enum class Type { kString, kInt, kDouble, kBool } type;
  std::string s;
  int64_t i = 0;
  double d = 0;
  LogValue(std::string_view v) : type(Type::kString), s(v) {}  // NOLINT
  LogValue(const char* v) : type(Type::kString), s(v ? v : "") {}  // NOLINT
  LogValue(const std::string& v) : type(Type::kString), s(v) {}  // NOLINT
  LogValue(bool v) : type(Type::kBool), i(v) {}  // NOLINT
  LogValue(double v) : type(Type::kDouble), d(v) {}  // NOLINT
  template <typename T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  LogValue(T v) : type(Type::kInt), i(int64_t(v)) {}  // NOLINT
};

// Log(LogLevel::kInfo, "checkpoint saved", {{"step", 200}, {"uri", uri}});
void Log(LogLevel level, std::string_view msg,
         std::initializer_list<std::pair<std::string_view, LogValue>> fields = {});

}  // namespace gantry

#define GANTRY_LOG_LEVEL_DEBUG ::gantry::LogLevel::kDebug
#define GANTRY_LOG_LEVEL_INFO ::gantry::LogLevel::kInfo
#define GANTRY_LOG_LEVEL_WARNING ::gantry::LogLevel::kWarning
#define GANTRY_LOG_LEVEL_ERROR ::gantry::LogLevel::kError

// GANTRY_LOG(INFO|DEBUG|WARNING|ERROR, "msg").Field(...)...; fields are not evaluated when
// the level is filtered out. Adds "src":"file:line".
#define GANTRY_LOG(level, msg)                                  \
  if (!::gantry::LogEnabled(GANTRY_LOG_LEVEL_##level)) {        \
  } else                                                        \
    ::gantry::LogLine(GANTRY_LOG_LEVEL_##level, (msg), __FILE__, __LINE__)
