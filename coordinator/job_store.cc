// JobStore over SQLite: schema, prepared statements, row <-> record mapping.
#include "coordinator/job_store.h"

#include <sqlite3.h>

#include <cstdlib>
#include <set>

#include <nlohmann/json.hpp>

#include "proto/wire.h"

namespace gantry::coordinator {

namespace {

const char* const kStateNames[] = {"PENDING",   "PLACED", "RUNNING",  "RESTARTING",
                                   "SUCCEEDED", "FAILED", "CANCELLED"};

const char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, seq INTEGER NOT NULL, name TEXT, kind TEXT, tenant TEXT,
  priority INTEGER, state TEXT NOT NULL, attempt INTEGER, max_restarts INTEGER,
  spec_yaml TEXT, workdir TEXT, ranks INTEGER, gpus_per_rank INTEGER, cpus_per_rank INTEGER,
  labels TEXT, submitted_ms INTEGER, started_ms INTEGER, finished_ms INTEGER, error TEXT,
  token TEXT, master_addr TEXT, master_port INTEGER, progress BLOB);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS ranks (
  job_id TEXT, attempt INTEGER, rank INTEGER, worker_id TEXT, state TEXT, exit_code INTEGER,
  pid INTEGER, gpus TEXT, cpus TEXT DEFAULT '', PRIMARY KEY (job_id, attempt, rank));
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT, time_ms INTEGER, state TEXT,
  reason TEXT, attempt INTEGER);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS logs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT, attempt INTEGER, rank INTEGER,
  stream TEXT, time_ms INTEGER, text TEXT, line INTEGER);
CREATE INDEX IF NOT EXISTS logs_job ON logs(job_id, seq);
)sql";

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Status status(const char* purpose) const {
    if (rc_ == SQLITE_OK) return OkStatus();
    return Status(StatusCode::kSystemError,
                  std::string("sqlite: preparing ") + purpose + ": " + sqlite3_errmsg(db_));
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // SQLITE_ROW -> true, SQLITE_DONE -> false.
  StatusOr<bool> Step(const char* purpose) {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return Status(StatusCode::kSystemError,
                  std::string("sqlite: ") + purpose + ": " + sqlite3_errmsg(db_));
  }
  Status Run(const char* purpose) {
    auto r = Step(purpose);
    return r.ok() ? OkStatus() : r.status();
  }
  std::string Text(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt_, col)) : "";
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

const char kJobColumns[] =
    "id, seq, name, kind, tenant, priority, state, attempt, max_restarts, spec_yaml, workdir, "
    "ranks, gpus_per_rank, cpus_per_rank, labels, submitted_ms, started_ms, finished_ms, error, "
    "token, master_addr, master_port, progress";

JobRecord ReadJob(const Stmt& s) {
  JobRecord j;
  j.id = s.Text(0);
  j.sequence = s.Int(1);
  j.name = s.Text(2);
  j.kind = s.Text(3);
  j.tenant = s.Text(4);
  j.priority = static_cast<int>(s.Int(5));
  auto st = ParseJobState(s.Text(6));
  j.state = st.ok() ? *st : JobState::kFailed;
  j.attempt = static_cast<int>(s.Int(7));
  j.max_restarts = static_cast<int>(s.Int(8));
  j.spec_yaml = s.Text(9);
  j.workdir = s.Text(10);
  j.ranks = static_cast<int>(s.Int(11));
  j.gpus_per_rank = static_cast<int>(s.Int(12));
  j.cpus_per_rank = static_cast<int>(s.Int(13));
  const std::string labels = s.Text(14);
  if (!labels.empty()) {
    auto parsed = nlohmann::json::parse(labels, nullptr, false);
    if (parsed.is_object())
      for (auto& [k, v] : parsed.items()) j.labels[k] = v.is_string() ? v.get<std::string>() : "";
  }
  j.submitted_ms = s.Int(15);
  j.started_ms = s.Int(16);
  j.finished_ms = s.Int(17);
  j.error = s.Text(18);
  j.token = s.Text(19);
  j.master_addr = s.Text(20);
  j.master_port = static_cast<int>(s.Int(21));
  j.progress = s.Text(22);
  return j;
}

}  // namespace

const char* JobStateName(JobState state) { return kStateNames[static_cast<int>(state)]; }

StatusOr<JobState> ParseJobState(const std::string& name) {
  for (int i = 0; i < 7; ++i)
    if (name == kStateNames[i]) return static_cast<JobState>(i);
  return InvalidArgumentError("unknown job state '" + name + "'");
}

StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status(StatusCode::kSystemError, "sqlite: opening job store " + path + ": " + msg +
                                                " (is the state directory writable?)");
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<JobStore> store(new JobStore(db));
  GANTRY_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL", "enabling WAL"));
  // NORMAL in WAL mode: a committed transaction survives a process kill (not power loss).
  GANTRY_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=NORMAL", "setting synchronous"));
  GANTRY_RETURN_IF_ERROR(store->Exec(kSchema, "creating the schema"));
  // Stores written before ranks had a cpus column get it (their ranks read as unpinned).
  GANTRY_RETURN_IF_ERROR(store->AddColumnIfMissing("ranks", "cpus", "TEXT DEFAULT ''"));
  // Log lines carry the worker's line number (NULL in older stores and for unnumbered lines):
  // a batch the worker resends is stored once, across job ends and coordinator restarts.
  GANTRY_RETURN_IF_ERROR(store->AddColumnIfMissing("logs", "line", "INTEGER"));
  GANTRY_RETURN_IF_ERROR(store->Exec(
      "CREATE UNIQUE INDEX IF NOT EXISTS logs_line ON logs(job_id, attempt, rank, line)",
      "indexing log line numbers"));
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

Status JobStore::AddColumnIfMissing(const std::string& table, const std::string& column,
                                    const std::string& type) {
  sqlite3_stmt* probe = nullptr;
  const std::string select = "SELECT " + column + " FROM " + table + " LIMIT 0";
  const bool has = sqlite3_prepare_v2(db_, select.c_str(), -1, &probe, nullptr) == SQLITE_OK;
  sqlite3_finalize(probe);
  if (has) return OkStatus();
  const std::string alter = "ALTER TABLE " + table + " ADD COLUMN " + column + " " + type;
  const std::string purpose = "adding " + table + "." + column + " to an older job store";
  return Exec(alter.c_str(), purpose.c_str());
}

Status JobStore::Exec(const char* sql, const char* purpose) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return Status(StatusCode::kSystemError, std::string("sqlite: ") + purpose + ": " + msg);
  }
  return OkStatus();
}

Status JobStore::Begin() { return Exec("BEGIN IMMEDIATE", "begin transaction"); }
void JobStore::Rollback() {
  if (sqlite3_get_autocommit(db_) == 0) Exec("ROLLBACK", "rolling back").IgnoreError();
  log_bytes_.clear();  // counted inside the rolled-back transaction: measured again
}

Status JobStore::Commit() {
  Status st = Exec("COMMIT", "commit transaction");
  if (!st.ok()) log_bytes_.clear();  // counted in a transaction that did not land
  // A failed COMMIT (disk full, I/O error) may leave the transaction open, and every later
  // BEGIN would then fail: end it, so that the next transition is written again.
  if (!st.ok() && sqlite3_get_autocommit(db_) == 0) {
    Status rb = Exec("ROLLBACK", "rolling back a failed commit");
    if (!rb.ok()) return Status(st.code(), st.message() + "; " + rb.message());
  }
  return st;
}

int64_t JobStore::NextSequence() {
  Stmt s(db_, "SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs");
  auto row = s.Step("reading the next sequence");
  return row.ok() && *row ? s.Int(0) : 1;
}

Status JobStore::UpsertJob(const JobRecord& j) {
  Stmt s(db_, (std::string("INSERT OR REPLACE INTO jobs (") + kJobColumns +
               ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
                  .c_str());
  GANTRY_RETURN_IF_ERROR(s.status("saving a job"));
  nlohmann::json labels(j.labels);
  s.Bind(1, j.id).Bind(2, j.sequence).Bind(3, j.name).Bind(4, j.kind).Bind(5, j.tenant);
  s.Bind(6, int64_t{j.priority}).Bind(7, std::string(JobStateName(j.state)));
  s.Bind(8, int64_t{j.attempt}).Bind(9, int64_t{j.max_restarts}).Bind(10, j.spec_yaml);
  s.Bind(11, j.workdir).Bind(12, int64_t{j.ranks}).Bind(13, int64_t{j.gpus_per_rank});
  s.Bind(14, int64_t{j.cpus_per_rank}).Bind(15, labels.dump()).Bind(16, j.submitted_ms);
  s.Bind(17, j.started_ms).Bind(18, j.finished_ms).Bind(19, j.error).Bind(20, j.token);
  s.Bind(21, j.master_addr).Bind(22, int64_t{j.master_port}).BindBlob(23, j.progress);
  return s.Run(("saving job " + j.id).c_str());
}

StatusOr<std::vector<JobRecord>> JobStore::LoadJobs(bool include_finished, int limit) {
  std::string sql = std::string("SELECT ") + kJobColumns + " FROM jobs";
  if (!include_finished) sql += " WHERE state NOT IN ('SUCCEEDED','FAILED','CANCELLED')";
  sql += " ORDER BY seq DESC";
  if (limit > 0) sql += " LIMIT " + std::to_string(limit);
  Stmt s(db_, sql.c_str());
  GANTRY_RETURN_IF_ERROR(s.status("loading jobs"));
  std::vector<JobRecord> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, s.Step("loading jobs"));
    if (!row) break;
    out.push_back(ReadJob(s));
  }
  return out;
}

StatusOr<JobRecord> JobStore::LoadJob(const std::string& id) {
  Stmt s(db_, (std::string("SELECT ") + kJobColumns + " FROM jobs WHERE id = ?").c_str());
  GANTRY_RETURN_IF_ERROR(s.status("loading a job"));
  s.Bind(1, id);
  GANTRY_ASSIGN_OR_RETURN(bool row, s.Step("loading a job"));
  if (!row) return NotFoundError("no job '" + id + "': see `gantry list --all`");
  return ReadJob(s);
}

StatusOr<std::map<std::string, int64_t>> JobStore::CountByState() {
  Stmt s(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  GANTRY_RETURN_IF_ERROR(s.status("counting jobs"));
  std::map<std::string, int64_t> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, s.Step("counting jobs"));
    if (!row) break;
    out[s.Text(0)] = s.Int(1);
  }
  return out;
}

Status JobStore::UpsertRank(const RankRecord& r) {
  Stmt s(db_,
         "INSERT OR REPLACE INTO ranks (job_id, attempt, rank, worker_id, state, exit_code, "
         "pid, gpus, cpus) VALUES (?,?,?,?,?,?,?,?,?)");
  GANTRY_RETURN_IF_ERROR(s.status("saving a rank"));
  s.Bind(1, r.job_id).Bind(2, int64_t{r.attempt}).Bind(3, int64_t{r.rank}).Bind(4, r.worker_id);
  s.Bind(5, r.state).Bind(6, int64_t{r.exit_code}).Bind(7, int64_t{r.pid});
  s.Bind(8, nlohmann::json(r.gpu_indices).dump()).Bind(9, r.cpus);
  return s.Run("saving a rank");
}

StatusOr<std::vector<RankRecord>> JobStore::LoadRanks(const std::string& job_id, int attempt) {
  Stmt s(db_,
         "SELECT rank, worker_id, state, exit_code, pid, gpus, cpus FROM ranks "
         "WHERE job_id = ? AND attempt = ? ORDER BY rank");
  GANTRY_RETURN_IF_ERROR(s.status("loading ranks"));
  s.Bind(1, job_id).Bind(2, int64_t{attempt});
  std::vector<RankRecord> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, s.Step("loading ranks"));
    if (!row) break;
    RankRecord r;
    r.job_id = job_id;
    r.attempt = attempt;
    r.rank = static_cast<int>(s.Int(0));
    r.worker_id = s.Text(1);
    r.state = s.Text(2);
    r.exit_code = static_cast<int>(s.Int(3));
    r.pid = static_cast<int>(s.Int(4));
    auto gpus = nlohmann::json::parse(s.Text(5), nullptr, false);
    if (gpus.is_array())
      for (auto& g : gpus) r.gpu_indices.push_back(g.get<int>());
    r.cpus = s.Text(6);
    out.push_back(r);
  }
  return out;
}

Status JobStore::AddEvent(const EventRecord& e) {
  Stmt s(db_, "INSERT INTO events (job_id, time_ms, state, reason, attempt) VALUES (?,?,?,?,?)");
  GANTRY_RETURN_IF_ERROR(s.status("saving an event"));
  s.Bind(1, e.job_id).Bind(2, e.time_ms).Bind(3, e.state).Bind(4, e.reason);
  s.Bind(5, int64_t{e.attempt});
  return s.Run("saving an event");
}

StatusOr<std::vector<EventRecord>> JobStore::LoadEvents(const std::string& job_id) {
  Stmt s(db_, "SELECT time_ms, state, reason, attempt FROM events WHERE job_id = ? ORDER BY id");
  GANTRY_RETURN_IF_ERROR(s.status("loading events"));
  s.Bind(1, job_id);
  std::vector<EventRecord> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, s.Step("loading events"));
    if (!row) break;
    out.push_back({job_id, s.Int(0), s.Text(1), s.Text(2), static_cast<int>(s.Int(3))});
  }
  return out;
}

Status JobStore::AppendLogs(std::vector<LogRow>& rows) {
  if (log_limit_ > 0) {  // a job's first append since start: what the store holds already
    for (const LogRow& r : rows) {
      if (log_bytes_.count(r.job_id)) continue;
      Stmt sum(db_,
               "SELECT COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) FROM logs WHERE job_id = ?");
      GANTRY_RETURN_IF_ERROR(sum.status("measuring a job's logs"));
      sum.Bind(1, r.job_id);
      GANTRY_ASSIGN_OR_RETURN(bool row, sum.Step("measuring a job's logs"));
      log_bytes_[r.job_id] = row ? uint64_t(sum.Int(0)) : 0;
    }
  }
  Stmt s(db_,
         "INSERT OR IGNORE INTO logs (job_id, attempt, rank, stream, time_ms, text, line) "
         "VALUES (?,?,?,?,?,?,?)");
  GANTRY_RETURN_IF_ERROR(s.status("saving log lines"));
  for (LogRow& r : rows) {
    s.Reset();
    s.Bind(1, r.job_id).Bind(2, int64_t{r.attempt}).Bind(3, int64_t{r.rank});
    s.Bind(4, r.stream).Bind(5, r.time_ms).Bind(6, r.text);
    if (r.line >= 0) {
      s.Bind(7, r.line);
    } else {
      s.BindNull(7);
    }
    GANTRY_RETURN_IF_ERROR(s.Run("saving a log line"));
    // A numbered line stored before (a resent batch) is ignored: seq 0.
    r.seq = sqlite3_changes(db_) == 1 ? static_cast<uint64_t>(sqlite3_last_insert_rowid(db_)) : 0;
  }
  if (log_limit_ == 0) return OkStatus();
  std::set<std::string> grown;
  for (const LogRow& r : rows) {
    if (r.seq == 0) continue;
    uint64_t& bytes = log_bytes_[r.job_id];
    bytes += r.text.size();
    if (bytes > log_limit_) grown.insert(r.job_id);
  }
  for (const std::string& job : grown) GANTRY_RETURN_IF_ERROR(TrimLogs(job, log_limit_ / 4 * 3));
  return OkStatus();
}

Status JobStore::TrimLogs(const std::string& job_id, uint64_t target) {
  uint64_t& bytes = log_bytes_[job_id];
  // Earlier notes (rank -1) are among the oldest rows: their counts carry on into this one.
  Stmt scan(db_,
            "SELECT seq, LENGTH(CAST(text AS BLOB)), CASE WHEN rank = -1 THEN text END "
            "FROM logs WHERE job_id = ? ORDER BY seq");
  GANTRY_RETURN_IF_ERROR(scan.status("trimming a job's logs"));
  scan.Bind(1, job_id);
  int64_t last = -1, lines = 0;
  uint64_t freed = 0;
  while (freed < bytes && bytes - freed > target) {
    GANTRY_ASSIGN_OR_RETURN(bool row, scan.Step("trimming a job's logs"));
    if (!row) break;
    last = scan.Int(0);
    freed += uint64_t(scan.Int(1));
    const std::string note = scan.Text(2);
    const size_t n = note.find("the oldest ");
    lines += n == std::string::npos ? 1 : std::atoll(note.c_str() + n + 11);
  }
  if (last < 0) return OkStatus();
  Stmt del(db_, "DELETE FROM logs WHERE job_id = ? AND seq <= ?");
  GANTRY_RETURN_IF_ERROR(del.status("trimming a job's logs"));
  del.Bind(1, job_id).Bind(2, last);
  GANTRY_RETURN_IF_ERROR(del.Run("trimming a job's logs"));
  // The note takes the deleted seq just below the oldest kept line, so it reads first. A
  // previous note is among the deleted lines; its count carries on.
  Stmt note(db_,
            "INSERT INTO logs (seq, job_id, attempt, rank, stream, time_ms, text, line) "
            "VALUES (?, ?, -1, -1, 'gantry', ?, ?, NULL)");
  GANTRY_RETURN_IF_ERROR(note.status("noting trimmed logs"));
  const std::string text = "gantry: the oldest " + std::to_string(lines) +
                           " stored output lines of this job were deleted (its log passed " +
                           std::to_string(log_limit_ >> 20) + " MiB)";
  note.Bind(1, last).Bind(2, job_id).Bind(3, wire::NowUnixMs()).Bind(4, text);
  GANTRY_RETURN_IF_ERROR(note.Run("noting trimmed logs"));
  bytes = bytes - freed + text.size();
  return OkStatus();
}

StatusOr<std::vector<LogRow>> JobStore::ReadLogs(const std::string& job_id, int rank,
                                                 uint64_t after_seq, int limit) {
  Stmt s(db_,
         "SELECT seq, attempt, rank, stream, time_ms, text FROM logs WHERE job_id = ? AND "
         "seq > ? AND (? < 0 OR rank = ?) ORDER BY seq LIMIT ?");
  GANTRY_RETURN_IF_ERROR(s.status("reading logs"));
  s.Bind(1, job_id).Bind(2, static_cast<int64_t>(after_seq)).Bind(3, int64_t{rank});
  s.Bind(4, int64_t{rank}).Bind(5, int64_t{limit > 0 ? limit : 1000});
  std::vector<LogRow> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, s.Step("reading logs"));
    if (!row) break;
    LogRow r;
    r.seq = static_cast<uint64_t>(s.Int(0));
    r.job_id = job_id;
    r.attempt = static_cast<int>(s.Int(1));
    r.rank = static_cast<int>(s.Int(2));
    r.stream = s.Text(3);
    r.time_ms = s.Int(4);
    r.text = s.Text(5);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace gantry::coordinator
