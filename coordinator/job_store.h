// JobStore: the coordinator's durable state in SQLite (WAL mode): jobs with their specs,
// attempts, ranks, events and log lines. Every state change is written before it is acted on,
// so a coordinator killed with -9 restarts with no job lost. Single-threaded: the coordinator
// loop owns it. Errors are kSystemError with SQLite's message and the statement's purpose.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

struct sqlite3;

namespace gantry::coordinator {

enum class JobState { kPending, kPlaced, kRunning, kRestarting, kSucceeded, kFailed, kCancelled };
const char* JobStateName(JobState state);  // "PENDING", ...
StatusOr<JobState> ParseJobState(const std::string& name);
inline bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

struct JobRecord {
  std::string id;
  int64_t sequence = 0;  // submission order (FIFO within a priority class)
  std::string name, kind, tenant;
  int priority = 1;  // 0 low, 1 normal, 2 high
  JobState state = JobState::kPending;
  int attempt = 0;  // 0-based; restarts so far
  int max_restarts = 0;
  std::string spec_yaml, workdir;
  int ranks = 1, gpus_per_rank = 0, cpus_per_rank = 1;
  std::map<std::string, std::string> labels;
  int64_t submitted_ms = 0, started_ms = 0, finished_ms = 0;
  std::string error;        // first error that failed an attempt
  std::string token;        // per-attempt token given to the ranks
  std::string master_addr;  // rank 0's host for this attempt
  int master_port = 0;
  std::string progress;  // serialized proto::JobProgress
};

struct RankRecord {
  std::string job_id;
  int attempt = 0;
  int rank = 0;
  std::string worker_id;
  std::string state;  // PLACED | RUNNING | EXITED | LOST
  int exit_code = 0;
  int pid = 0;
  std::vector<int> gpu_indices;
  std::string cpus;  // cores the worker pinned the rank to ("0-3"; "" = not pinned)
};

struct EventRecord {
  std::string job_id;
  int64_t time_ms = 0;
  std::string state;
  std::string reason;
  int attempt = 0;
};

struct LogRow {
  uint64_t seq = 0;  // assigned by AppendLogs; 0 when the line was stored before (a resend)
  std::string job_id;
  int attempt = 0, rank = 0;
  std::string stream;
  int64_t time_ms = 0;
  std::string text;
  int64_t line = -1;  // the worker's number of the line for its rank (-1: none)
};

class JobStore {
 public:
  // Opens (creating the schema if needed) `path`, e.g. ".gantry/gantry.db".
  static StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  Status Begin();
  Status Commit();
  void Rollback();  // ends an open transaction, dropping its writes (best effort)

  int64_t NextSequence();  // max(sequence) + 1
  Status UpsertJob(const JobRecord& job);
  StatusOr<std::vector<JobRecord>> LoadJobs(bool include_finished, int limit = 0);
  StatusOr<JobRecord> LoadJob(const std::string& id);
  StatusOr<std::map<std::string, int64_t>> CountByState();

  Status UpsertRank(const RankRecord& rank);
  StatusOr<std::vector<RankRecord>> LoadRanks(const std::string& job_id, int attempt);

  Status AddEvent(const EventRecord& event);
  StatusOr<std::vector<EventRecord>> LoadEvents(const std::string& job_id);

  // Assigns seq to each row (monotonic across jobs). A job whose stored text grows past the
  // log limit loses its oldest lines down to 3/4 of it, and a line (at the seq just below the
  // oldest kept) says how many went: one chatty rank must not fill the coordinator's disk.
  Status AppendLogs(std::vector<LogRow>& rows);
  // Bytes of text per job (0: unlimited). Default 256 MiB (coordinator --max-job-log-mb).
  void set_log_limit(uint64_t bytes) { log_limit_ = bytes; }
  // rank < 0: every rank. Rows with seq > after_seq, ascending, at most `limit`.
  StatusOr<std::vector<LogRow>> ReadLogs(const std::string& job_id, int rank, uint64_t after_seq,
                                         int limit);

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}
  Status Exec(const char* sql, const char* purpose);
  // Schema upgrade of a store written by an older gantry: adds the column unless it exists.
  Status AddColumnIfMissing(const std::string& table, const std::string& column,
                            const std::string& type);
  // Deletes `job_id`'s oldest lines until its text is at most `target` bytes.
  Status TrimLogs(const std::string& job_id, uint64_t target);
  sqlite3* db_;
  uint64_t log_limit_ = uint64_t{256} << 20;
  std::map<std::string, uint64_t> log_bytes_;  // per job, loaded on its first append
};

}  // namespace gantry::coordinator
