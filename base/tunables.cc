// Tunables: GANTRY_<NAME> environment lookups with strict parsing and a warning on bad values.
#include "base/tunables.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <set>

#include "base/logging.h"

namespace gantry {
namespace {

std::string EnvName(std::string_view name) {
  if (name.rfind("GANTRY_", 0) == 0) return std::string(name);
  return "GANTRY_" + std::string(name);
}

const char* Lookup(std::string_view name, std::string* env_name) {
  *env_name = EnvName(name);
  const char* v = std::getenv(env_name->c_str());
  return v != nullptr && *v != '\0' ? v : nullptr;
}

void WarnOnce(const std::string& env_name, const char* value, const char* expected) {
  static std::mutex mu;
  static std::set<std::string>* warned = new std::set<std::string>();
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!warned->insert(env_name).second) return;
  }
  GANTRY_LOG(WARNING, "ignoring malformed tunable; using the default")
      .Field("variable", env_name)
      .Field("value", value)
      .Field("expected", expected);
}

}  // namespace

int64_t TunableInt(std::string_view name, int64_t dflt) {
  std::string env;
  const char* v = Lookup(name, &env);
  if (v == nullptr) return dflt;
  std::string_view s(v);
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc() || ptr != s.data() + s.size()) {
    WarnOnce(env, v, "an integer");
    return dflt;
  }
  return out;
}

double TunableDouble(std::string_view name, double dflt) {
  std::string env;
  const char* v = Lookup(name, &env);
  if (v == nullptr) return dflt;
  char* end = nullptr;
  double out = std::strtod(v, &end);
  if (*end != '\0' || !std::isfinite(out)) {
    WarnOnce(env, v, "a finite number");
    return dflt;
  }
  return out;
}

bool TunableBool(std::string_view name, bool dflt) {
  std::string env;
  const char* v = Lookup(name, &env);
  if (v == nullptr) return dflt;
  std::string s(v);
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  WarnOnce(env, v, "1/0, true/false, yes/no or on/off");
  return dflt;
}

std::optional<bool> TunableAutoBool(std::string_view name) {
  std::string env;
  const char* v = Lookup(name, &env);
  if (v == nullptr) return std::nullopt;
  std::string s(v);
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (s == "auto") return std::nullopt;
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  WarnOnce(env, v, "auto, 1/0, true/false, yes/no or on/off");
  return std::nullopt;
}

std::string TunableString(std::string_view name, std::string_view dflt) {
  std::string env;
  const char* v = Lookup(name, &env);
  return v == nullptr ? std::string(dflt) : std::string(v);
}

std::vector<TunableValue> ListTunables() {
  std::vector<TunableValue> out;
  for (const TunableDoc& d : kTunables) {
    const char* v = std::getenv(EnvName(d.name).c_str());
    out.push_back({d, v != nullptr ? v : ""});
  }
  return out;
}

}  // namespace gantry
