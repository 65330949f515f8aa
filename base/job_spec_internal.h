// Internal to base/job_spec*.cc: the line table the parser records (field path -> 1-based
// YAML line) so that the validator can point errors at the right line. Not a public API.
#pragma once

#include <map>
#include <string>

#include "base/job_spec.h"

namespace gantry::job_spec_internal {

// "model.heads" -> 7. Sections map to the line of their key ("model" -> 5); "" is the root.
using LineMap = std::map<std::string, int>;

// Every range, enumeration and cross-field check. All problems are reported, one per line of
// the message, each "<source>:<line>: <path>: <what>" (":<line>" omitted when unknown).
Status Validate(const JobSpec& spec, const LineMap* lines);

// A value as errors quote it: at most 120 bytes, then "... (N bytes)" (a 10 MB name was
// echoed whole).
inline std::string Clip(const std::string& s) {
  constexpr size_t kMax = 120;
  if (s.size() <= kMax) return s;
  size_t cut = kMax;  // not inside a UTF-8 character
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "... (" + std::to_string(s.size()) + " bytes)";
}

}  // namespace gantry::job_spec_internal
