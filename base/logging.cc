// JSON-lines logging: line building, escaping, context fields, level filter and the sink.
#include "base/logging.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <mutex>
#include <vector>

namespace gantry {
namespace {

constexpr int kLevelUnset = -1;
std::atomic<int> g_level{kLevelUnset};

struct LogState {
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> context;  // key -> JSON-encoded value
  std::string context_json;  // ',"k":v,...' rebuilt on every change
  std::shared_ptr<const LogSink> sink;
};

LogState& State() {
  static LogState* state = new LogState();  // never destroyed: logging works during exit
  return *state;
}

void RebuildContext(LogState& s) {
  s.context_json.clear();
  for (const auto& [k, v] : s.context) {
    s.context_json += ',';
    AppendJsonString(&s.context_json, k);
    s.context_json += ':';
    s.context_json += v;
  }
}

void SetContextEncoded(std::string_view key, std::string encoded) {
  LogState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  for (auto& [k, v] : s.context) {
    if (k == key) {
      v = std::move(encoded);
      RebuildContext(s);
      return;
    }
  }
  s.context.emplace_back(std::string(key), std::move(encoded));
  RebuildContext(s);
}

void WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere left to report a failing stderr
    data.remove_prefix(size_t(n));
  }
}

// Length of a valid UTF-8 sequence starting at s[i], or 0 when invalid.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
  if (c >= 0xF5 || len == 0 || i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  }
  auto c1 = static_cast<unsigned char>(s[i + 1]);
  if (c == 0xE0 && c1 < 0xA0) return 0;  // overlong
  if (c == 0xED && c1 >= 0xA0) return 0;  // UTF-16 surrogates
  if (c == 0xF0 && c1 < 0x90) return 0;  // overlong
  if (c == 0xF4 && c1 >= 0x90) return 0;  // > U+10FFFF
  return len;
}

}  // namespace

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
    case LogLevel::kOff: return "off";
  }
  return "unknown";
}

StatusOr<LogLevel> ParseLogLevel(std::string_view text) {
  std::string t;
  for (char c : text) t += char(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (t == "debug") return LogLevel::kDebug;
  if (t == "info") return LogLevel::kInfo;
  if (t == "warn" || t == "warning") return LogLevel::kWarning;
  if (t == "error") return LogLevel::kError;
  if (t == "off" || t == "none") return LogLevel::kOff;
  return InvalidArgumentError("unknown log level '" + std::string(text) +
                              "': expected debug, info, warning, error or off");
}

void SetLogLevel(LogLevel level) { g_level.store(int(level), std::memory_order_relaxed); }

LogLevel GetLogLevel() {
  int v = g_level.load(std::memory_order_relaxed);
  if (v != kLevelUnset) return LogLevel(v);
  LogLevel level = LogLevel::kInfo;
  Status bad;
  if (const char* env = std::getenv("GANTRY_LOG_LEVEL"); env && *env) {
    auto parsed = ParseLogLevel(env);
    if (parsed.ok()) level = *parsed; else bad = parsed.status();
  }
  int expected = kLevelUnset;
  // The level is set before the warning, so logging it does not come back here.
  if (g_level.compare_exchange_strong(expected, int(level)) && !bad.ok()) {
    GANTRY_LOG(WARNING, "GANTRY_LOG_LEVEL ignored; logging at info").Field("error", bad);
  }
  return LogLevel(g_level.load(std::memory_order_relaxed));
}

void SetLogContext(std::string_view key, std::string_view value) {
  std::string enc;
  AppendJsonString(&enc, value);
  SetContextEncoded(key, std::move(enc));
}

void SetLogContext(std::string_view key, int64_t value) {
  SetContextEncoded(key, std::to_string(value));
}

void ClearLogContext() {
  LogState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  s.context.clear();
  s.context_json.clear();
}

void SetLogSink(LogSink sink) {
  LogState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  s.sink = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
}

std::string ToValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : Utf8SequenceLength(s, i);
    if (len == 0) {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      ++i;
    } else {
      out.append(s.data() + i, len);
      i += len;
    }
  }
  return out;
}

size_t FirstInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = static_cast<unsigned char>(s[i]) < 0x80 ? 1 : Utf8SequenceLength(s, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

void AppendJsonString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      size_t len = Utf8SequenceLength(s, i);
      if (len == 0) {
        out->append("\\ufffd");
        ++i;
      } else {
        out->append(s.data() + i, len);
        i += len;
      }
      continue;
    }
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 15]);
        } else {
          out->push_back(char(c));
        }
    }
    ++i;
  }
  out->push_back('"');
}

void AppendJsonNumber(std::string* out, double v) {
  if (std::isnan(v)) return out->append("\"NaN\""), void();
  if (std::isinf(v)) return out->append(v > 0 ? "\"Infinity\"" : "\"-Infinity\""), void();
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, res.ptr);
}

std::string NowRfc3339() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char buf[40];
  snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
           t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, int(ts.tv_nsec / 1000000));
  return buf;
}

LogLine::LogLine(LogLevel level, std::string_view msg, const char* file, int line) {
  buf_.reserve(256);
  buf_ += "{\"ts\":\"";
  buf_ += NowRfc3339();
  buf_ += "\",\"level\":\"";
  buf_ += LogLevelName(level);
  buf_ += "\",\"msg\":";
  AppendJsonString(&buf_, msg);
  LogState& s = State();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    buf_ += s.context_json;
  }
  if (file != nullptr) {
    std::string_view f(file);
    if (auto slash = f.rfind('/'); slash != std::string_view::npos) f.remove_prefix(slash + 1);
    std::string src(f);
    src += ':';
    src += std::to_string(line);
    Field("src", src);
  }
}

LogLine::~LogLine() {
  buf_ += "}\n";
  std::shared_ptr<const LogSink> sink;
  {
    LogState& s = State();
    std::lock_guard<std::mutex> lock(s.mu);
    sink = s.sink;
  }
  if (sink) {
    (*sink)(buf_);
  } else {
    WriteAll(STDERR_FILENO, buf_);
  }
}

void LogLine::Key(std::string_view key) {
  buf_ += ',';
  AppendJsonString(&buf_, key);
  buf_ += ':';
}

LogLine& LogLine::Field(std::string_view key, std::string_view value) {
  Key(key);
  AppendJsonString(&buf_, value);
  return *this;
}

LogLine& LogLine::Field(std::string_view key, bool value) {
  Key(key);
  buf_ += value ? "true" : "false";
  return *this;
}

LogLine& LogLine::Field(std::string_view key, double value) {
  Key(key);
  AppendJsonNumber(&buf_, value);
  return *this;
}

LogLine& LogLine::Field(std::string_view key, const Status& status) {
  return Field(key, std::string_view(status.ToString()));
}

LogLine& LogLine::FieldInt(std::string_view key, int64_t v) {
  Key(key);
  buf_ += std::to_string(v);
  return *this;
}

LogLine& LogLine::FieldUint(std::string_view key, uint64_t v) {
  Key(key);
  buf_ += std::to_string(v);
  return *this;
}

void Log(LogLevel level, std::string_view msg,
         std::initializer_list<std::pair<std::string_view, LogValue>> fields) {
  if (!LogEnabled(level)) return;
  LogLine line(level, msg);
  for (const auto& [key, v] : fields) {
    switch (v.type) {
      case LogValue::Type::kString: line.Field(key, std::string_view(v.s)); break;
      case LogValue::Type::kInt: line.Field(key, v.i); break;
      case LogValue::Type::kDouble: line.Field(key, v.d); break;
      case LogValue::Type::kBool: line.Field(key, v.i != 0); break;
    }
  }
}

}  // namespace gantry
