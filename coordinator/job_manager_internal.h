// Internal to JobManager: the in-memory job (record + current attempt's ranks + timers) and
// small helpers shared by job_manager.cc and job_manager_events.cc.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "coordinator/job_manager.h"

namespace gantry::coordinator {

inline bool RankIsDone(const RankRecord& r) { return r.state == "EXITED" || r.state == "LOST"; }

struct JobManager::Job {
  JobRecord rec;
  std::vector<RankRecord> ranks;  // current attempt, index = rank
  std::vector<bool> confirmed;    // re-adoption after a restart: reported by its worker
  // LaunchRank per rank of the current attempt, resent while a heartbeat of its worker shows
  // the rank is missing (the message was lost); empty for gangs re-adopted after a restart.
  std::vector<proto::Envelope> launches;
  std::vector<SteadyTime> launch_sent;
  std::vector<int> launch_resends;
  bool stopping = false;          // StopRanks sent for the current attempt
  SteadyTime stop_deadline{};
  bool adopting = false;
  SteadyTime adopt_deadline{};
  SteadyTime submitted_at{};
  std::string waiting;  // scheduler's reason while PENDING
  bool spec_checked = false;  // its stored spec parsed with this coordinator's rules
  proto::JobProgress progress;
  bool AllDone() const {
    return std::all_of(ranks.begin(), ranks.end(),
                       [](const RankRecord& r) { return RankIsDone(r); });
  }
};

std::string RandomToken();

inline std::string SanitizeName(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '-';
  return out.empty() ? "job" : out.substr(0, 48);
}

inline int PriorityClass(const std::string& p) { return p == "high" ? 2 : p == "low" ? 0 : 1; }
inline const char* PriorityName(int p) { return p == 2 ? "high" : p == 0 ? "low" : "normal"; }

// Fills argv/env/workdir of a LaunchRank for the job's kind (train and serve jobs run the
// worker's own gantry binary; command jobs run the spec's argv).
void FillCommand(const JobRecord& rec, proto::LaunchRank* launch);

}  // namespace gantry::coordinator
