// Settings every rank of a job must share (how a collective is cut into messages, the bucket
// plan, the backend, the step count), compared across ranks at set-up. Each rank reads its
// own environment, so two ranks can disagree; without a check they exchange the same byte
// counts with other meanings, wait in different collectives, or diverge, and the error (if
// any) names something else. The caller gathers every rank's EncodeSettings blob (bootstrap
// store, a collective) and CompareSettings names the first difference.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace gantry {

// (name as the user sets it, e.g. "GANTRY_COMM_SHM_STAGES", value).
using SharedSettings = std::vector<std::pair<std::string, std::string>>;

std::string EncodeSettings(const SharedSettings& settings);

// blobs[r] is rank r's EncodeSettings. OK when every rank's equals rank 0's; otherwise
// kFailedPrecondition, the same on every rank: "<what>: rank R has NAME = V but rank 0 has
// V0; every rank must use the same NAME" for the first such setting of the lowest such rank.
// A blob that does not decode (a rank of another version) is named as such.
Status CompareSettings(const std::string& what, const std::vector<std::string>& blobs);

}  // namespace gantry
