// JobStore (SQLite round trips), WorkerRegistry (heartbeats with a fake clock, allocation),
// Rendezvous KV (scopes, parked gets, expiry) and the wire (decode rejections).
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>
#include <zmq.h>

#include <filesystem>

#include "coordinator/job_store.h"
#include "coordinator/rendezvous.h"
#include "coordinator/security.h"
#include "coordinator/worker_registry.h"
#include "proto/wire.h"

namespace gantry::coordinator {
namespace {

using std::chrono::milliseconds;

TEST(JobStore, RoundTripsJobsRanksEventsLogs) {
  const std::string path =
      std::filesystem::temp_directory_path() / ("js-" + std::to_string(getpid()) + ".db");
  std::filesystem::remove(path);
  {
    auto store = std::move(JobStore::Open(path)).value();
    JobRecord j;
    j.id = "a-1";
    j.sequence = store->NextSequence();
    j.state = JobState::kRunning;
    j.labels = {{"rack", "r1"}};
    j.spec_yaml = "name: a\n";
    j.progress = std::string("\x08\x05", 2);
    ASSERT_TRUE(store->UpsertJob(j).ok());
    ASSERT_TRUE(store->UpsertRank({"a-1", 0, 0, "w0", "RUNNING", 0, 42, {1, 3}, "0-1,4"}).ok());
    ASSERT_TRUE(store->AddEvent({"a-1", 5, "RUNNING", "why", 0}).ok());
    std::vector<LogRow> rows{{0, "a-1", 0, 0, "stdout", 1, "hello"},
                             {0, "a-1", 0, 1, "stderr", 2, "x"}};
    ASSERT_TRUE(store->AppendLogs(rows).ok());
    EXPECT_LT(rows[0].seq, rows[1].seq);
  }
  auto store = std::move(JobStore::Open(path)).value();  // reopen: durable
  auto j = store->LoadJob("a-1");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state, JobState::kRunning);
  EXPECT_EQ(j->labels.at("rack"), "r1");
  EXPECT_EQ(j->progress, std::string("\x08\x05", 2));
  EXPECT_EQ(store->NextSequence(), 2);
  auto ranks = store->LoadRanks("a-1", 0);
  ASSERT_EQ(ranks->size(), 1u);
  EXPECT_EQ((*ranks)[0].gpu_indices, (std::vector<int>{1, 3}));
  EXPECT_EQ((*ranks)[0].cpus, "0-1,4");
  EXPECT_EQ(store->LoadEvents("a-1")->at(0).reason, "why");
  auto logs = store->ReadLogs("a-1", 1, 0, 10);
  ASSERT_EQ(logs->size(), 1u);
  EXPECT_EQ((*logs)[0].text, "x");
  EXPECT_EQ(store->LoadJob("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->LoadJobs(false)->size(), 1u);
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path + ext);
}

// A job's stored log is bounded: past the limit its oldest lines go (down to 3/4 of it), a
// note first in the log says how many, other jobs keep theirs, and a store opened again
// measures what a job already holds.
TEST(JobStore, AJobsLogIsTrimmedFromTheOldestLinePastTheLimit) {
  const std::string path =
      std::filesystem::temp_directory_path() / ("js-trim-" + std::to_string(getpid()) + ".db");
  std::filesystem::remove(path);
  const std::string line(100, 'x');
  auto append = [&](JobStore& store, const std::string& job, int first, int n) {
    std::vector<LogRow> rows;
    for (int i = first; i < first + n; ++i) {
      LogRow r{0, job, 0, 0, "stdout", i, std::to_string(i) + ":" + line};
      r.line = i;
      rows.push_back(std::move(r));
    }
    ASSERT_TRUE(store.AppendLogs(rows).ok());
  };
  // "gantry: the oldest N stored output lines..." -> N.
  auto deleted = [](const LogRow& note) {
    const size_t at = note.text.find("the oldest ");
    return at == std::string::npos ? -1 : std::atoi(note.text.c_str() + at + 11);
  };
  auto text_bytes = [](const std::vector<LogRow>& rows) {
    uint64_t b = 0;
    for (const LogRow& r : rows) b += r.text.size();
    return b;
  };
  {
    auto store = std::move(JobStore::Open(path)).value();
    store->set_log_limit(10000);  // ~96 lines of ~104 bytes
    append(*store, "other", 0, 50);
    append(*store, "chatty", 0, 200);
    auto logs = store->ReadLogs("chatty", -1, 0, 1000);
    ASSERT_TRUE(logs.ok());
    ASSERT_FALSE(logs->empty());
    EXPECT_LE(text_bytes(*logs), 10000u);
    EXPECT_NE((*logs)[0].text.find("stored output lines of this job were deleted"),
              std::string::npos) << (*logs)[0].text;
    EXPECT_EQ(logs->back().text.substr(0, 4), "199:") << "the newest lines are kept";
    // The kept lines are the newest, without gaps.
    int expect = std::atoi((*logs)[1].text.c_str());
    for (size_t i = 1; i < logs->size(); ++i) EXPECT_EQ(std::atoi((*logs)[i].text.c_str()), expect++);
    EXPECT_EQ(store->ReadLogs("other", -1, 0, 1000)->size(), 50u) << "other jobs keep theirs";
    EXPECT_EQ(deleted((*logs)[0]) + int(logs->size()) - 1, 200) << "every line kept or counted";
  }
  auto store = std::move(JobStore::Open(path)).value();
  store->set_log_limit(10000);
  append(*store, "chatty", 200, 100);  // measured from the store on this first append
  auto logs = store->ReadLogs("chatty", -1, 0, 1000);
  ASSERT_TRUE(logs.ok());
  EXPECT_LE(text_bytes(*logs), 10000u);
  EXPECT_EQ(logs->back().text.substr(0, 4), "299:");
  // Earlier notes' counts carry on into the newest one.
  EXPECT_EQ(deleted((*logs)[0]) + int(logs->size()) - 1, 300) << (*logs)[0].text;
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path + ext);
}

// A store written before ranks had a cpus column opens, keeps its ranks (unpinned) and gets
// the column.
TEST(JobStore, OlderStoreGainsTheCpusColumn) {
  const std::string path =
      std::filesystem::temp_directory_path() / ("js-old-" + std::to_string(getpid()) + ".db");
  std::filesystem::remove(path);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TABLE ranks (job_id TEXT, attempt INTEGER, rank INTEGER, "
                         "worker_id TEXT, state TEXT, exit_code INTEGER, pid INTEGER, gpus TEXT, "
                         "PRIMARY KEY (job_id, attempt, rank));"
                         "INSERT INTO ranks VALUES ('o-1', 0, 0, 'w0', 'RUNNING', 0, 7, '[2]');",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  {
    auto store = JobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto ranks = (*store)->LoadRanks("o-1", 0);
    ASSERT_TRUE(ranks.ok()) << ranks.status().ToString();
    ASSERT_EQ(ranks->size(), 1u);
    EXPECT_EQ((*ranks)[0].pid, 7);
    EXPECT_EQ((*ranks)[0].gpu_indices, (std::vector<int>{2}));
    EXPECT_EQ((*ranks)[0].cpus, "");
    ASSERT_TRUE((*store)->UpsertRank({"o-1", 0, 1, "w0", "RUNNING", 0, 8, {}, "3"}).ok());
  }
  auto store = std::move(JobStore::Open(path)).value();  // opening again: no second ALTER
  auto ranks = store->LoadRanks("o-1", 0);
  ASSERT_EQ(ranks->size(), 2u);
  EXPECT_EQ((*ranks)[1].cpus, "3");
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path + ext);
}

TEST(WorkerRegistry, LostAfterMissedHeartbeatsAndReRegister) {
  FakeClock clock;
  WorkerRegistry reg(&clock, milliseconds(1000), 5);
  proto::RegisterWorker w;
  w.set_worker_id("w0");
  w.mutable_resources()->set_cpu_slots(2);
  for (int i = 0; i < 2; ++i) w.mutable_resources()->add_gpus()->set_index(i);
  reg.Register(w, "id");
  for (int i = 0; i < 10; ++i) {
    clock.Advance(milliseconds(900));
    EXPECT_TRUE(reg.Heartbeat("w0", "id"));
    EXPECT_TRUE(reg.ExpireLost().empty());
  }
  auto gpus = reg.Allocate("w0", 2, 1);
  ASSERT_TRUE(gpus.ok());
  EXPECT_EQ(*gpus, (std::vector<int>{0, 1}));
  EXPECT_EQ(reg.Allocate("w0", 1, 1).status().code(), StatusCode::kResourceExhausted);
  clock.Advance(milliseconds(5000));
  EXPECT_TRUE(reg.ExpireLost().empty()) << "exactly 5 intervals is not yet lost";
  clock.Advance(milliseconds(1));
  EXPECT_EQ(reg.ExpireLost(), std::vector<std::string>{"w0"});
  EXPECT_FALSE(reg.Heartbeat("w0", "id")) << "a lost worker must register again";
  reg.Register(w, "id2");
  EXPECT_FALSE(reg.Find("w0")->lost);
  EXPECT_TRUE(reg.Find("w0")->gpus_used.empty());
  EXPECT_NE(reg.AllocatePort("w0", 29500, 2, 0), reg.AllocatePort("w0", 29500, 2, 0));
  EXPECT_EQ(reg.AllocatePort("w0", 29500, 2, 0), 0) << "range exhausted";
}

TEST(WorkerRegistry, WorkersOnOneHostNeverGetTheSamePort) {
  FakeClock clock;
  WorkerRegistry reg(&clock, milliseconds(1000), 5);
  for (const char* id : {"w0", "w1", "w2"}) {
    proto::RegisterWorker w;
    w.set_worker_id(id);
    w.set_address(std::string(id) == "w2" ? "10.0.0.2" : "127.0.0.1");
    w.mutable_resources()->set_cpu_slots(2);
    reg.Register(w, id);
  }
  // Same seed, same range: the second worker on 127.0.0.1 must not get the first one's port
  // (two command jobs there collided on MASTER_PORT); another host may.
  const int a = reg.AllocatePort("w0", 29500, 4, 1);
  const int b = reg.AllocatePort("w1", 29500, 4, 1);
  const int c = reg.AllocatePort("w2", 29500, 4, 1);
  EXPECT_NE(a, 0);
  EXPECT_NE(b, 0);
  EXPECT_NE(a, b);
  EXPECT_EQ(c, a);
  reg.ReleasePort("w0", a);
  EXPECT_EQ(reg.AllocatePort("w1", 29500, 4, 1), a) << "released on its host";
}

TEST(Rendezvous, ScopesParkedGetsAndExpiry) {
  Rendezvous kv;
  std::vector<RoutedReply> out;
  const std::string s0 = Rendezvous::Scope("j", 0), s1 = Rendezvous::Scope("j", 1);
  kv.Set(s0, "k", "v0", out);
  EXPECT_EQ(kv.Get(s0, "k"), "v0");
  EXPECT_FALSE(kv.Get(s1, "k").has_value()) << "attempts do not share keys";
  const SteadyTime t0{};
  kv.Park(s1, "k", "peer", 7, t0 + milliseconds(100));
  kv.Park(s1, "late", "peer", 8, t0 + milliseconds(100));
  kv.Set(s1, "k", "v1", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].env.request_id(), 7u);
  EXPECT_EQ(out[0].env.kv_value().value(), "v1");
  out.clear();
  kv.Expire(t0 + milliseconds(99), out);
  EXPECT_TRUE(out.empty());
  kv.Expire(t0 + milliseconds(100), out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].env.error().code(), static_cast<int>(StatusCode::kDeadlineExceeded));
  EXPECT_NE(out[0].env.error().message().find("'late'"), std::string::npos);
  out.clear();
  EXPECT_EQ(kv.Add(s1, "n", 2, out).value(), 2);
  EXPECT_EQ(kv.Add(s1, "n", 3, out).value(), 5);
  ASSERT_TRUE(kv.Park(s1, "never", "peer", 9, t0 + milliseconds(1000)).ok());
  kv.Drop(s1, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].env.error().code(), static_cast<int>(StatusCode::kCancelled));
  EXPECT_FALSE(kv.Get(s1, "k").has_value());
}

// Any rank with its attempt's token writes here: one attempt cannot take more than its budget,
// all attempts together cannot take more than the store's, a refused write keeps the old value,
// and dropping a scope returns its bytes.
TEST(Rendezvous, BudgetsBoundEachAttemptAndTheWholeStore) {
  Rendezvous kv(Rendezvous::Limits{/*scope_bytes=*/1000, /*total_bytes=*/1500,
                                   /*scope_parked=*/2, /*value_bytes=*/2000});
  std::vector<RoutedReply> out;
  const std::string a = Rendezvous::Scope("a", 0), b = Rendezvous::Scope("b", 0);
  ASSERT_TRUE(kv.Set(a, "k", std::string(900, 'x'), out).ok());
  Status st = kv.Set(a, "k2", std::string(200, 'y'), out);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("'k2' of a/0"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("budget of 1000"), std::string::npos) << st.ToString();
  EXPECT_FALSE(kv.Get(a, "k2").has_value());
  // Overwriting in place is measured by the difference; growing past the budget is refused
  // and keeps the old value.
  ASSERT_TRUE(kv.Set(a, "k", std::string(990, 'z'), out).ok());
  EXPECT_EQ(kv.Set(a, "k", std::string(1000, 'w'), out).code(), StatusCode::kResourceExhausted);
  // One value over the per-value limit, whatever the budgets.
  Rendezvous small(Rendezvous::Limits{1000, 1500, 2, /*value_bytes=*/100});
  st = small.Set(Rendezvous::Scope("c", 0), "big", std::string(101, 'v'), out);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("over the limit of 100"), std::string::npos) << st.ToString();
  EXPECT_EQ(kv.Get(a, "k")->size(), 990u);
  EXPECT_EQ(kv.bytes(), 991u);
  // The store-wide budget: b's own budget has room, the store does not.
  st = kv.Set(b, "k", std::string(600, 'x'), out);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("store is full"), std::string::npos) << st.ToString();
  // Counters: garbage is not a counter, overflow is refused.
  ASSERT_TRUE(kv.Set(b, "text", "abc", out).ok());
  EXPECT_EQ(kv.Add(b, "text", 1, out).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(kv.Set(b, "big", std::to_string(INT64_MAX), out).ok());
  EXPECT_EQ(kv.Add(b, "big", 1, out).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(kv.Add(b, "n", -4, out).value(), -4);
  // Parked Gets per attempt; answering one frees its place.
  const SteadyTime t0{};
  ASSERT_TRUE(kv.Park(b, "w", "peer", 1, t0 + milliseconds(10)).ok());
  ASSERT_TRUE(kv.Park(b, "w", "peer", 2, t0 + milliseconds(10)).ok());
  EXPECT_EQ(kv.Park(b, "w", "peer", 3, t0 + milliseconds(10)).code(),
            StatusCode::kResourceExhausted);
  EXPECT_TRUE(kv.Park(a, "w", "peer", 4, t0 + milliseconds(10)).ok()) << "a has its own";
  out.clear();
  ASSERT_TRUE(kv.Set(b, "w", "v", out).ok());
  EXPECT_EQ(out.size(), 2u);
  EXPECT_TRUE(kv.Park(b, "w2", "peer", 5, t0 + milliseconds(10)).ok());
  out.clear();
  kv.Expire(t0 + milliseconds(10), out);
  EXPECT_EQ(out.size(), 2u);
  EXPECT_EQ(kv.parked(), 0u);
  // Dropping an attempt returns its bytes to the store.
  kv.Drop(a, out);
  EXPECT_TRUE(kv.Set(b, "k", std::string(600, 'x'), out).ok());
}

TEST(Wire, DecodeRejectsBadInput) {
  proto::Envelope env;
  env.set_version(wire::kProtocolVersion);
  env.set_request_id(3);
  env.mutable_list_workers();
  const std::string ok = wire::Encode(env);
  EXPECT_TRUE(wire::Decode(ok.data(), ok.size(), 1024).ok());
  EXPECT_EQ(wire::Decode(ok.data(), ok.size(), 2).status().code(), StatusCode::kResourceExhausted);
  const std::string junk = "\xff\xff\xff";
  EXPECT_EQ(wire::Decode(junk.data(), junk.size(), 1024).status().code(),
            StatusCode::kInvalidArgument);
  env.set_version(2);
  const std::string v2 = wire::Encode(env);
  EXPECT_EQ(wire::Decode(v2.data(), v2.size(), 1024).status().code(),
            StatusCode::kFailedPrecondition);
  proto::Envelope empty;
  empty.set_version(wire::kProtocolVersion);
  const std::string e = wire::Encode(empty);
  EXPECT_FALSE(wire::Decode(e.data(), e.size(), 1024).ok()) << "no body";
  EXPECT_TRUE(wire::IsLoopbackEndpoint("tcp://127.0.0.1:1"));
  EXPECT_TRUE(wire::IsLoopbackEndpoint("tcp://127.3.4.5:1"));
  EXPECT_FALSE(wire::IsLoopbackEndpoint("tcp://0.0.0.0:1"));
  EXPECT_FALSE(wire::IsLoopbackEndpoint("tcp://10.1.2.3:1"));
  Status st = wire::StatusFromError(wire::ErrorReply(1, NotFoundError("x")).error());
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  // A refused message's id is still read, so its error reply reaches the waiting call.
  EXPECT_EQ(wire::PeekRequestId(v2.data(), v2.size()), 3u) << "another version";
  EXPECT_EQ(wire::PeekRequestId(ok.data(), ok.size()), 3u);
  EXPECT_EQ(wire::PeekRequestId(junk.data(), junk.size()), 0u);
  EXPECT_EQ(wire::PeekRequestId(e.data(), e.size()), 0u) << "no id set";
}

// The ZAP handler answers a malformed request too: a REP socket that skipped one could never
// receive again, and every later CURVE handshake would have stalled.
TEST(Zap, MalformedRequestIsAnsweredAndTheNextOneServed) {
  auto zap = ZapHandler::Start({});
  ASSERT_TRUE(zap.ok()) << zap.status().ToString();
  void* req = zmq_socket(wire::Context(), ZMQ_REQ);
  const int linger = 0, timeout = 2000;
  zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_setsockopt(req, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
  ASSERT_EQ(zmq_connect(req, "inproc://zeromq.zap.01"), 0);
  auto ask = [&](const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i)
      zmq_send(req, frames[i].data(), frames[i].size(), i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
    std::vector<std::string> reply;
    int more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, req, 0) < 0) {
        zmq_msg_close(&m);
        return reply;  // timed out: empty or partial
      }
      reply.emplace_back(static_cast<char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
      more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    return reply;
  };
  auto bad = ask({"1.0", "7", "gantry"});
  ASSERT_EQ(bad.size(), 6u) << "the malformed request got no answer";
  EXPECT_EQ(bad[1], "7");
  EXPECT_EQ(bad[2], "500");
  auto next = ask({"1.0", "8", "gantry", "127.0.0.1", "", "NULL"});
  ASSERT_EQ(next.size(), 6u) << "the handler stopped answering";
  EXPECT_EQ(next[1], "8");
  EXPECT_EQ(next[2], "400");
  zmq_close(req);
}

}  // namespace
}  // namespace gantry::coordinator
