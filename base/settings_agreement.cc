// Shared-settings encoding and comparison (base/settings_agreement.h).
#include "base/settings_agreement.h"

#include <map>

namespace gantry {

namespace {
constexpr char kFieldSep = '\x1f';   // name / value
constexpr char kRecordSep = '\x1e';  // between settings

bool Decode(const std::string& blob, SharedSettings* out) {
  out->clear();
  size_t pos = 0;
  while (pos < blob.size()) {
    const size_t end = blob.find(kRecordSep, pos);
    if (end == std::string::npos) return false;
    const std::string record = blob.substr(pos, end - pos);
    const size_t sep = record.find(kFieldSep);
    if (sep == std::string::npos) return false;
    out->emplace_back(record.substr(0, sep), record.substr(sep + 1));
    pos = end + 1;
  }
  return true;
}
}  // namespace

std::string EncodeSettings(const SharedSettings& settings) {
  std::string out;
  for (const auto& [name, value] : settings) {
    out += name;
    out += kFieldSep;
    out += value;
    out += kRecordSep;
  }
  return out;
}

Status CompareSettings(const std::string& what, const std::vector<std::string>& blobs) {
  if (blobs.empty()) return OkStatus();
  SharedSettings base;
  if (!Decode(blobs[0], &base)) {
    return FailedPreconditionError(what + ": rank 0's settings are unreadable (another version?)");
  }
  for (size_t r = 1; r < blobs.size(); ++r) {
    if (blobs[r] == blobs[0]) continue;
    SharedSettings theirs;
    if (!Decode(blobs[r], &theirs)) {
      return FailedPreconditionError(what + ": rank " + std::to_string(r) +
                                     "'s settings are unreadable (another version?)");
    }
    std::map<std::string, std::string> by_name(theirs.begin(), theirs.end());
    for (const auto& [name, value] : base) {
      auto it = by_name.find(name);
      const std::string v = it == by_name.end() ? "(not set)" : it->second;
      if (v != value) {
        return FailedPreconditionError(what + ": rank " + std::to_string(r) + " has " + name +
                                       " = " + v + " but rank 0 has " + value +
                                       "; every rank must use the same " + name);
      }
    }
    return FailedPreconditionError(what + ": rank " + std::to_string(r) +
                                   " has settings rank 0 does not know (another version?)");
  }
  return OkStatus();
}

}  // namespace gantry
