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

}  // namespace gantry::job_spec_internal
