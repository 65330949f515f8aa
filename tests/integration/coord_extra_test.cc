// More coordinator integration tests: a real PyTorch DDP (gloo) command job on 2 ranks, the
// rendezvous KV scoped by the per-attempt token, malformed/oversized messages, /metrics, and
// security (CURVE allow-list + user tokens; non-loopback refused without them).
#include <sched.h>
#include <unistd.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <zmq.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <set>

#include "gantry_config.h"
#include "proto/wire.h"
#include "tests/integration/comm_launcher.h"
#include "tests/integration/coord_harness.h"

namespace gantry::testing {
namespace {

bool HaveTorch() { return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0; }

TEST(CoordExtra, PyTorchDdpGlooJobRunsUnchanged) {
  if (!HaveTorch()) GTEST_SKIP() << "/usr/bin/python3 has no torch (apt-get install python3-torch)";
  Cluster cl("ddp");
  cl.StartCoordinator();
  cl.StartWorker("w0", 1);
  cl.StartWorker("w1", 1);
  ASSERT_TRUE(cl.WaitWorkers(2));
  auto c = cl.Client();
  const std::string script = std::string(GANTRY_SOURCE_DIR) + "/tests/integration/coord_ddp.py";
  auto id = c->Submit(
      "name: ddp\nkind: command\nresources: {ranks: 2, cpus_per_rank: 1}\n"
      "command: {argv: [/usr/bin/python3, " +
          script + "]}\nrestarts: {max: 0}\n",
      "ddp.yaml", "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"}, std::chrono::seconds(90));
  const std::string logs = cl.Logs(*c, *id);
  EXPECT_EQ(info.state(), "SUCCEEDED") << logs;
  EXPECT_NE(logs.find("rank 0/2 done, replicas identical: True"), std::string::npos) << logs;
  EXPECT_NE(logs.find("rank 1/2 done, replicas identical: True"), std::string::npos) << logs;
  EXPECT_NE(info.rank_info(0).worker_id(), info.rank_info(1).worker_id()) << "one rank per worker";
  EXPECT_EQ(info.progress().step(), 15) << "progress parsed from rank 0's JSON lines";
}

// gantry worker --pin-cpus: each rank gets cpus_per_rank cores of its own, pinned before exec
// (so jobs sharing a host never share a core) and OMP_NUM_THREADS to match; the coordinator
// records the cores per rank.
TEST(CoordExtra, PinnedWorkerGivesEveryRankItsOwnCore) {
  cpu_set_t mask;
  ASSERT_EQ(sched_getaffinity(0, sizeof(mask), &mask), 0);
  if (CPU_COUNT(&mask) < 2) GTEST_SKIP() << "needs 2 usable CPUs";
  Cluster cl("pin");
  cl.StartCoordinator();
  cl.StartWorker("w0", 2, {"--pin-cpus"});
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(
      CommandJob("pin", 2,
                 "echo R=$RANK OMP=$OMP_NUM_THREADS "
                 "CPUS=$(sed -n \"s/^Cpus_allowed_list:[[:space:]]*//p\" /proc/self/status)"),
      "pin.yaml", cl.dir().string());
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"});
  const std::string logs = cl.Logs(*c, *id);
  ASSERT_EQ(info.state(), "SUCCEEDED") << logs;
  std::set<int> cpus;
  for (int r = 0; r < 2; ++r) {
    const std::string tag = "R=" + std::to_string(r) + " OMP=1 CPUS=";
    const size_t at = logs.find(tag);
    ASSERT_NE(at, std::string::npos) << logs;
    const size_t from = at + tag.size();
    const std::string list = logs.substr(from, logs.find_first_of(" \n\"", from) - from);
    const int cpu = std::atoi(list.c_str());
    EXPECT_EQ(list, std::to_string(cpu)) << "one CPU per rank, got " << list;
    EXPECT_TRUE(cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &mask)) << cpu;
    cpus.insert(cpu);
    // The coordinator knows it too (gantry describe prints it).
    ASSERT_GT(info.rank_info_size(), r);
    EXPECT_EQ(info.rank_info(r).cpus(), list) << "rank " << r;
  }
  EXPECT_EQ(cpus.size(), 2u) << "the ranks share a core: " << logs;
}

TEST(CoordExtra, RendezvousKvIsScopedByAttemptToken) {
  Cluster cl("kv");
  cl.StartCoordinator();
  cl.StartWorker("w0");
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(CommandJob("kv", 1, "echo TOKEN=$GANTRY_TOKEN; sleep 30"), "kv.yaml", "");
  ASSERT_TRUE(id.ok());
  cl.WaitState(*c, *id, {"RUNNING"});
  std::string token;
  for (int i = 0; i < 100 && token.empty(); ++i) {
    const std::string logs = cl.Logs(*c, *id);
    const size_t p = logs.find("TOKEN=");
    if (p != std::string::npos) token = logs.substr(p + 6, 32);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(token.size(), 32u);
  auto call = [&](proto::Envelope env, const std::string& tok) {
    env.set_job_id(*id);
    env.set_attempt(0);
    env.set_token(tok);
    return c->channel().Call(std::move(env), std::chrono::milliseconds(2000));
  };
  proto::Envelope set;
  set.mutable_kv_set()->set_key("nccl_id");
  set.mutable_kv_set()->set_value(std::string("\x00\x01\x02", 3));
  ASSERT_TRUE(call(set, token).ok());
  proto::Envelope get;
  get.mutable_kv_get()->set_key("nccl_id");
  get.mutable_kv_get()->set_timeout_ms(100);
  auto got = call(get, token);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->kv_value().value(), std::string("\x00\x01\x02", 3));
  auto bad = call(get, std::string(32, 'x'));
  EXPECT_EQ(bad.status().code(), StatusCode::kPermissionDenied);
  get.mutable_kv_get()->set_key("missing");
  auto missing = call(get, token);
  EXPECT_EQ(missing.status().code(), StatusCode::kDeadlineExceeded) << missing.status().ToString();
  proto::Envelope add;
  add.mutable_kv_add()->set_key("arrived");
  add.mutable_kv_add()->set_delta(1);
  ASSERT_TRUE(call(add, token).ok());
  auto two = call(add, token);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->kv_value().number(), 2);
  ASSERT_TRUE(c->Cancel(*id).ok());
}

// Raw DEALER: what a buggy or hostile peer could send.
std::string RawRoundTrip(const std::string& endpoint, const std::string& bytes) {
  void* s = zmq_socket(wire::Context(), ZMQ_DEALER);
  int linger = 0, timeout = 3000;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
  zmq_connect(s, endpoint.c_str());
  zmq_send(s, bytes.data(), bytes.size(), 0);
  std::string out(1 << 16, '\0');
  const int n = zmq_recv(s, out.data(), out.size(), 0);
  zmq_close(s);
  out.resize(n < 0 ? 0 : std::min<size_t>(n, out.size()));
  return out;
}

TEST(CoordExtra, MalformedAndOversizedMessagesGetErrorReplies) {
  Cluster cl("malformed");
  cl.StartCoordinator({}, {"GANTRY_MAX_MESSAGE_BYTES=4096"});
  auto c = cl.Client();
  ASSERT_TRUE(c->Workers().ok());
  proto::Envelope reply;
  ASSERT_TRUE(reply.ParseFromString(RawRoundTrip(cl.endpoint(), "\xff\xff garbage \x01")));
  EXPECT_TRUE(reply.has_error());
  EXPECT_NE(reply.error().message().find("malformed"), std::string::npos) << reply.DebugString();
  proto::Envelope big;
  big.set_version(wire::kProtocolVersion);
  big.set_request_id(7);
  big.mutable_submit_job()->set_spec_yaml(std::string(10000, 'x'));
  ASSERT_TRUE(reply.ParseFromString(RawRoundTrip(cl.endpoint(), wire::Encode(big))));
  EXPECT_EQ(reply.error().code(), static_cast<int>(StatusCode::kResourceExhausted));
  proto::Envelope old = big;
  old.set_version(99);
  old.mutable_submit_job()->set_spec_yaml("x");
  ASSERT_TRUE(reply.ParseFromString(RawRoundTrip(cl.endpoint(), wire::Encode(old))));
  EXPECT_NE(reply.error().message().find("protocol version 99"), std::string::npos);
  proto::Envelope push;  // a coordinator->worker message sent to the coordinator
  push.set_version(wire::kProtocolVersion);
  push.set_request_id(9);
  push.mutable_launch_rank()->set_job_id("x");
  ASSERT_TRUE(reply.ParseFromString(RawRoundTrip(cl.endpoint(), wire::Encode(push))));
  EXPECT_EQ(reply.request_id(), 9u);
  EXPECT_NE(reply.error().message().find("launch_rank"), std::string::npos);
  EXPECT_TRUE(c->Workers().ok()) << "still serving";
  // The real client gets that error as its answer, at once (it used to wait out its timeout
  // and ask whether the coordinator was running).
  const auto t0 = std::chrono::steady_clock::now();
  auto refused = c->Submit("name: big\n# " + std::string(10000, 'x') + "\n", "big.yaml", "");
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("GANTRY_MAX_MESSAGE_BYTES"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

// A worker driven by the test over a raw DEALER (register, heartbeats, rank reports).
class HandWorker {
 public:
  explicit HandWorker(const std::string& endpoint) {
    sock_ = zmq_socket(wire::Context(), ZMQ_DEALER);
    int linger = 0, timeout = 200;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(sock_, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    zmq_connect(sock_, endpoint.c_str());
  }
  ~HandWorker() { zmq_close(sock_); }
  void Send(proto::Envelope env) {
    env.set_version(wire::kProtocolVersion);
    env.set_request_id(++next_id_);
    const std::string bytes = wire::Encode(env);
    zmq_send(sock_, bytes.data(), bytes.size(), 0);
  }
  // The next message matching `want`, within `seconds` (others are dropped).
  std::optional<proto::Envelope> Next(const std::function<bool(const proto::Envelope&)>& want,
                                      double seconds = 5) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    std::string buf(1 << 16, '\0');
    while (std::chrono::steady_clock::now() < until) {
      const int n = zmq_recv(sock_, buf.data(), buf.size(), 0);
      if (n < 0) continue;
      proto::Envelope env;
      if (env.ParseFromArray(buf.data(), std::min<int>(n, int(buf.size()))) && want(env)) return env;
    }
    return std::nullopt;
  }
  proto::Envelope Heartbeat(uint64_t epoch, const std::vector<proto::RankStatus>& ranks) {
    proto::Envelope env;
    env.mutable_heartbeat()->set_worker_id("hand");
    env.mutable_heartbeat()->set_epoch(epoch);
    for (const auto& r : ranks) *env.mutable_heartbeat()->add_ranks() = r;
    return env;
  }

 private:
  void* sock_ = nullptr;
  uint64_t next_id_ = 0;
};

// A heartbeat of an older registration (still queued on a replaced socket) carries an old
// rank list: it must be ignored, not reconciled. Were it reconciled, the running rank it does
// not list would fail the attempt, and the coordinator would answer the dead socket.
TEST(CoordExtra, HeartbeatOfAnOlderRegistrationChangesNothing) {
  Cluster cl("staleepoch");
  cl.StartCoordinator();
  auto c = cl.Client();
  HandWorker w(cl.endpoint());
  proto::Envelope reg;
  reg.mutable_register_worker()->set_worker_id("hand");
  reg.mutable_register_worker()->set_hostname("hand-host");
  reg.mutable_register_worker()->set_address("127.0.0.1");
  reg.mutable_register_worker()->mutable_resources()->set_cpu_slots(1);
  reg.mutable_register_worker()->set_epoch(5);
  w.Send(reg);
  ASSERT_TRUE(w.Next([](const proto::Envelope& e) { return e.has_register_reply(); }));
  auto id = c->Submit(CommandJob("held", 1, "sleep 60"), "held.yaml", "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto launch = w.Next([](const proto::Envelope& e) { return e.has_launch_rank(); });
  ASSERT_TRUE(launch.has_value()) << "no LaunchRank for the hand worker";
  proto::RankStatus running;
  running.set_job_id(launch->launch_rank().job_id());
  running.set_attempt(launch->launch_rank().attempt());
  running.set_rank(launch->launch_rank().rank());
  running.set_pid(424242);
  proto::Envelope started;
  started.mutable_rank_started()->set_worker_id("hand");
  *started.mutable_rank_started()->mutable_rank() = running;
  w.Send(started);
  w.Send(w.Heartbeat(5, {running}));
  auto info = cl.WaitState(*c, *id, {"RUNNING"});
  ASSERT_EQ(info.state(), "RUNNING");
  // The stale heartbeat, from another socket, listing no ranks.
  {
    HandWorker old(cl.endpoint());
    old.Send(old.Heartbeat(4, {}));
    auto reply = old.Next([](const proto::Envelope& e) { return e.has_heartbeat_reply(); });
    ASSERT_TRUE(reply.has_value());
    EXPECT_TRUE(reply->heartbeat_reply().registered()) << "a known worker, just an old epoch";
  }
  // Current heartbeats keep coming for a few intervals: the job stays RUNNING, attempt 0.
  for (int i = 0; i < 10; ++i) {
    w.Send(w.Heartbeat(5, {running}));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto now = c->GetJob(*id, true);
  ASSERT_TRUE(now.ok()) << now.status().ToString();
  EXPECT_EQ(now->state(), "RUNNING") << now->DebugString();
  EXPECT_EQ(now->attempt(), 0) << now->DebugString();
  // Replies still reach the current socket: cancel -> StopRanks arrives here.
  ASSERT_TRUE(c->Cancel(*id).ok());
  EXPECT_TRUE(w.Next([](const proto::Envelope& e) { return e.has_stop_ranks(); }).has_value())
      << "StopRanks went to the stale socket";
}

// A stand-in coordinator (a ROUTER driven by the test) that can withhold replies, to see how
// a real worker copes with lost messages.
class HandCoordinator {
 public:
  HandCoordinator() {
    sock_ = zmq_socket(wire::Context(), ZMQ_ROUTER);
    const int linger = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof(linger));
    EXPECT_EQ(zmq_bind(sock_, "tcp://127.0.0.1:*"), 0);
    char last[256] = {0};
    size_t len = sizeof(last);
    zmq_getsockopt(sock_, ZMQ_LAST_ENDPOINT, last, &len);
    endpoint_ = last;
  }
  ~HandCoordinator() { zmq_close(sock_); }
  const std::string& endpoint() const { return endpoint_; }
  // The next message within `timeout`, or nullopt.
  std::optional<proto::Envelope> Recv(std::chrono::milliseconds timeout) {
    zmq_pollitem_t item{sock_, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout.count()) <= 0) return std::nullopt;
    std::string frames[2];
    int n = 0, more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, sock_, 0) < 0) return std::nullopt;
      if (n < 2) frames[n].assign(static_cast<char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
      ++n;
      more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    identity_ = frames[0];
    auto env = wire::Decode(frames[1].data(), frames[1].size(), wire::kHardMaxMessageBytes);
    if (!env.ok()) return std::nullopt;
    return *env;
  }
  void Reply(const proto::Envelope& to, proto::Envelope env) {
    env.set_version(wire::kProtocolVersion);
    env.set_request_id(to.request_id());
    EXPECT_TRUE(wire::Send(sock_, wire::Encode(env), &identity_).ok());
  }
  void Push(proto::Envelope env) { Reply(proto::Envelope(), std::move(env)); }

 private:
  void* sock_ = nullptr;
  std::string endpoint_, identity_;
};

// A worker whose RankExited or RankLogs is not acknowledged (the message or its ack was lost)
// sends it again until it is, and forgets the rank only then: the coordinator never keeps a
// finished rank RUNNING. A LaunchRank delivered twice (the coordinator resends launches that
// heartbeats do not show) starts the rank once. Heartbeats list the ranks the worker holds.
// Starts a real worker "w0" against `hc` and answers its registration: heartbeats every
// 100 ms, lost after `lost_after` missed.
void RegisterHandWorker(HandCoordinator& hc, Cluster& cl, int cpus, int lost_after) {
  cl.Spawn("w0", {"worker", "--coordinator", hc.endpoint(), "--id", "w0", "--dir",
                  (cl.dir() / "w0").string(), "--cpus", std::to_string(cpus)});
  std::optional<proto::Envelope> m;
  for (int i = 0; i < 100 && !(m && m->has_register_worker()); ++i)
    m = hc.Recv(std::chrono::milliseconds(100));
  ASSERT_TRUE(m && m->has_register_worker()) << cl.ReadLog("w0");
  proto::Envelope reply;
  reply.mutable_register_reply()->set_heartbeat_interval_ms(100);
  reply.mutable_register_reply()->set_lost_after_missed(lost_after);
  hc.Reply(*m, reply);
}

TEST(CoordExtra, WorkerRepeatsUnacknowledgedExitsAndStartsADuplicateLaunchOnce) {
  HandCoordinator hc;
  Cluster cl("hand");
  ASSERT_NO_FATAL_FAILURE(RegisterHandWorker(hc, cl, 2, 100));
  std::optional<proto::Envelope> m;
  proto::Envelope launch;
  proto::LaunchRank* l = launch.mutable_launch_rank();
  l->set_job_id("j1");
  l->set_rank(0);
  l->set_world_size(1);
  l->set_local_world_size(1);
  l->set_kind("command");
  l->set_token("t");
  for (const char* a : {"/bin/sh", "-c", "echo started; sleep 0.3"}) l->add_argv(a);
  hc.Push(launch);
  hc.Push(launch);  // a resend crossing the first
  int started = 0, exits = 0, listed_exited = 0, log_sends = 0;
  proto::Envelope first_exit;
  std::string first_batch;
  bool forgotten = false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!forgotten && std::chrono::steady_clock::now() < end) {
    m = hc.Recv(std::chrono::milliseconds(100));
    if (!m) continue;
    proto::Envelope r;
    if (m->has_heartbeat()) {
      for (const auto& s : m->heartbeat().ranks()) listed_exited += s.exited();
      forgotten = exits >= 2 && m->heartbeat().ranks_size() == 0;
      r.mutable_heartbeat_reply()->set_registered(true);
      hc.Reply(*m, r);
    } else if (m->has_rank_started()) {
      ++started;
      r.mutable_ack();
      hc.Reply(*m, r);
    } else if (m->has_rank_exited()) {
      EXPECT_EQ(m->rank_exited().rank().exit_code(), 0);
      // The first one's ack is late: it comes only after the resend, and must still count
      // (the resend is not acknowledged at all).
      if (++exits == 1) {
        first_exit = *m;
      } else if (exits == 2) {
        r.mutable_ack();
        hc.Reply(first_exit, r);
      }
    } else if (m->has_rank_logs()) {
      // Output is kept until acknowledged: the first batch is "lost" and must come again,
      // the same lines under the same number.
      const proto::RankLogs& logs = m->rank_logs();
      ASSERT_TRUE(logs.has_first_line());
      if (logs.first_line() == 0) {
        std::string text;
        for (const auto& rec : logs.records()) text += rec.text() + "\n";
        if (++log_sends == 1) {
          first_batch = text;
          continue;  // no ack
        }
        EXPECT_EQ(text, first_batch);
      }
      r.mutable_ack();
      hc.Reply(*m, r);
    }
  }
  EXPECT_EQ(started, 1) << "the duplicate launch must not start a second process";
  EXPECT_EQ(exits, 2) << "reported again once, then retired by the late ack of the first\n"
                      << cl.ReadLog("w0");
  EXPECT_GT(listed_exited, 0) << "heartbeats list the exited rank until its exit is acked";
  EXPECT_TRUE(forgotten) << "after the acks the rank leaves the heartbeats";
  EXPECT_GE(log_sends, 2) << "unacknowledged output is sent again";
  EXPECT_NE(first_batch.find("started"), std::string::npos) << first_batch;
  cl.Stop("w0");
  EXPECT_NE(cl.ReadLog("w0").find("reporting it again"), std::string::npos);
}

// While the coordinator acknowledges no output, the worker spools at most 64 MiB: past that the
// oldest batches go, and once output is acknowledged again the rank's log says how many lines
// were lost. Every line is then either delivered or counted lost, and the lost ones are the
// oldest. (84,000 lines of ~1 KB = 82 MiB.)
TEST(CoordExtra, WorkerSpoolDropsTheOldestOutputPastItsLimitAndSaysHowMuch) {
  HandCoordinator hc;
  Cluster cl("spool");
  ASSERT_NO_FATAL_FAILURE(RegisterHandWorker(hc, cl, 1, 1000));
  std::optional<proto::Envelope> m;
  constexpr int kLines = 84000;
  proto::Envelope launch;
  proto::LaunchRank* l = launch.mutable_launch_rank();
  l->set_job_id("spool");
  l->set_rank(0);
  l->set_world_size(1);
  l->set_local_world_size(1);
  l->set_kind("command");
  l->set_token("t");
  for (const char* a : {"/usr/bin/awk", "BEGIN { s = sprintf(\"%990s\", \"\"); gsub(/ /, \"x\", s); "
                                        "for (i = 0; i < 84000; i++) print \"L\" i, s }"}) {
    l->add_argv(a);
  }
  hc.Push(launch);
  std::set<int> delivered;
  std::set<uint64_t> batches_seen;
  int64_t lost = -1;
  bool exited = false, acking = false, forgotten = false;
  std::vector<proto::Envelope> exits;
  std::chrono::steady_clock::time_point exited_at;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (!forgotten && std::chrono::steady_clock::now() < end) {
    // Acknowledge output only from 1 s after the rank exited: by then it all sat in the spool.
    if (exited && !acking && std::chrono::steady_clock::now() - exited_at > std::chrono::seconds(1)) {
      acking = true;
      for (const auto& e : exits) {
        proto::Envelope ack;
        ack.mutable_ack();
        hc.Reply(e, ack);
      }
    }
    m = hc.Recv(std::chrono::milliseconds(100));
    if (!m) continue;
    proto::Envelope r;
    if (m->has_heartbeat()) {
      forgotten = acking && m->heartbeat().ranks_size() == 0;
      r.mutable_heartbeat_reply()->set_registered(true);
      hc.Reply(*m, r);
    } else if (m->has_rank_started()) {
      r.mutable_ack();
      hc.Reply(*m, r);
    } else if (m->has_rank_exited()) {
      if (!exited) exited_at = std::chrono::steady_clock::now();
      exited = true;
      if (acking) {
        r.mutable_ack();
        hc.Reply(*m, r);
      } else {
        exits.push_back(*m);
      }
    } else if (m->has_rank_logs() && acking) {
      // A batch resent before its ack arrived comes twice: count it once.
      if (!batches_seen.insert(m->rank_logs().first_line()).second) {
        r.mutable_ack();
        hc.Reply(*m, r);
        continue;
      }
      for (const auto& rec : m->rank_logs().records()) {
        const std::string& t = rec.text();
        if (t.rfind("L", 0) == 0) {
          delivered.insert(std::atoi(t.c_str() + 1));
        } else if (t.find("output lines of this rank were lost") != std::string::npos) {
          // Several reports when evictions came at different times (a report still unacked
          // can itself be evicted; its count then carries over to the next one).
          lost = std::max<int64_t>(lost, 0) + std::atoll(t.c_str() + std::string("gantry: ").size());
        }
      }
      r.mutable_ack();
      hc.Reply(*m, r);
    }
  }
  cl.Stop("w0");
  ASSERT_TRUE(exited) << cl.ReadLog("w0");
  EXPECT_TRUE(forgotten) << "the rank was not retired after its output was acknowledged";
  ASSERT_GT(lost, 0) << "82 MiB of unacknowledged output must overflow the 64 MiB spool";
  ASSERT_FALSE(delivered.empty());
  const int64_t missing = kLines - int64_t(delivered.size());
  EXPECT_LT(missing, kLines / 2) << "no more than the overflow is dropped";
  EXPECT_EQ(lost, missing) << "every line not delivered is counted lost, once";
  // The lost ones are the oldest: what arrived is the tail, without gaps.
  EXPECT_EQ(*delivered.begin(), missing);
  EXPECT_EQ(*delivered.rbegin(), kLines - 1);
}

using comm::testing::HttpGet;

TEST(CoordExtra, MetricsEndpointReportsWorkersAndJobs) {
  Cluster cl("metrics");
  const int mport = FreeLoopbackPort();
  cl.StartCoordinator({"--metrics-port", std::to_string(mport)});
  cl.StartWorker("w0", 2, {"--gpus", "4"});
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(
      "name: g\nkind: command\nresources: {ranks: 1, gpus_per_rank: 3}\n"
      "command: {argv: [/bin/sh, -c, 'echo CVD=$CUDA_VISIBLE_DEVICES']}\n",
      "g.yaml", "");
  ASSERT_TRUE(id.ok());
  cl.WaitState(*c, *id, {"SUCCEEDED"});
  EXPECT_NE(cl.Logs(*c, *id).find("CVD=0,1,2"), std::string::npos) << cl.Logs(*c, *id);
  std::string text;
  for (int i = 0; i < 40; ++i) {  // gauges refresh every tick
    text = HttpGet(mport, "/metrics");
    if (text.find("gantry_coordinator_jobs{state=\"SUCCEEDED\"} 1") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(text.find("200 OK"), std::string::npos);
  EXPECT_NE(text.find("gantry_coordinator_workers{state=\"ready\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_coordinator_gpus{state=\"free\"} 4"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_coordinator_jobs{state=\"SUCCEEDED\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_coordinator_queue_wait_seconds_count 1"), std::string::npos) << text;
}

// gantry worker --metrics-port: the agent's own /metrics. A 2-rank job whose rank 1 fails
// (no restarts) is counted as 2 launches, one ok exit and one failed exit, with nothing left
// running; the worker reports itself connected, its slots, and its heartbeats.
TEST(CoordExtra, WorkerMetricsCountLaunchesAndExits) {
  Cluster cl("wmetrics");
  const int wport = FreeLoopbackPort();
  cl.StartCoordinator();
  cl.StartWorker("w0", 2, {"--metrics-port", std::to_string(wport)});
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  // Rank 1 fails only once rank 0 has exited 0 and the worker has reaped it (a zombie still
  // answers kill -0); else the gang's stop could end rank 0 first and count it failed.
  auto id = c->Submit(CommandJob("exits", 2,
                                 "if [ $RANK = 0 ]; then echo $$ > r0-pid; exit 0; fi; "
                                 "for i in $(seq 400); do [ -s r0-pid ] && "
                                 "! kill -0 $(cat r0-pid) 2>/dev/null && break; sleep 0.05; "
                                 "done; exit 1"),
                      "exits.yaml", cl.dir().string());
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  const auto info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.state(), "FAILED");
  const std::string logs = info.DebugString() + cl.Logs(*c, *id);
  const std::string w = "{worker=\"w0\"}";
  std::string text;
  for (int i = 0; i < 40; ++i) {  // gauges refresh every 50 ms loop turn
    text = HttpGet(wport, "/metrics");
    if (text.find("gantry_worker_ranks_running" + w + " 0") != std::string::npos &&
        text.find("outcome=\"failed\",worker=\"w0\"} 1") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(text.find("200 OK"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_worker_connected" + w + " 1"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_worker_cpu_slots" + w + " 2"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_worker_rank_launches_total" + w + " 2"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_worker_rank_exits_total{outcome=\"ok\",worker=\"w0\"} 1"),
            std::string::npos)
      << text << logs;
  EXPECT_NE(text.find("gantry_worker_rank_exits_total{outcome=\"failed\",worker=\"w0\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry_worker_ranks_running" + w + " 0"), std::string::npos) << text;
  EXPECT_EQ(text.find("gantry_worker_heartbeats_total" + w + " 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_worker_heartbeats_total" + w), std::string::npos) << text;
}

// A worker whose --metrics-port is taken does not start half-working: it exits non-zero
// naming the flag and the port, and never registers.
TEST(CoordExtra, WorkerMetricsPortInUseIsAnError) {
  Cluster cl("wmetrics-busy");
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int busy = ntohs(addr.sin_port);
  cl.StartCoordinator();
  const pid_t pid = cl.StartWorker("w0", 1, {"--metrics-port", std::to_string(busy)});
  siginfo_t info{};
  for (int i = 0; i < 100 && info.si_pid != pid; ++i) {  // WNOWAIT: the cluster reaps it
    if (waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != pid) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  close(fd);
  ASSERT_EQ(info.si_pid, pid) << "the worker kept running: " << cl.ReadLog("w0");
  EXPECT_EQ(info.si_code, CLD_EXITED) << "killed by a signal";
  EXPECT_NE(info.si_status, 0);
  const std::string log = cl.ReadLog("w0");
  EXPECT_NE(log.find("--metrics-port " + std::to_string(busy)), std::string::npos) << log;
  EXPECT_EQ(log.find("registered with coordinator"), std::string::npos) << log;
}

TEST(CoordExtra, NonLoopbackBindNeedsKeysAndTokens) {
  Cluster cl("insecure");
  cl.Spawn("coordinator", {"coordinator", "--bind", "tcp://0.0.0.0:" + std::to_string(cl.port()),
                           "--dir", (cl.dir() / "state").string()});
  for (int i = 0; i < 100 && cl.ReadLog("coordinator").find("refusing") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_NE(cl.ReadLog("coordinator").find("refusing to listen on tcp://0.0.0.0"),
            std::string::npos)
      << cl.ReadLog("coordinator");
}

// Tokens map to tenants: a tenant cannot cancel another tenant's job; an admin token can.
TEST(CoordExtra, OnlyTheOwnerOrAnAdminCancelsAJob) {
  Cluster cl("tenants");
  std::ofstream(cl.dir() / "tokens") << "alice-token-0123456789 team-a\n"
                                        "bobby-token-0123456789 team-b\n"
                                        "opsop-token-0123456789 ops admin\n";
  cl.StartCoordinator({"--tokens", (cl.dir() / "tokens").string()});
  auto alice = cl.Client("alice-token-0123456789");
  auto bob = cl.Client("bobby-token-0123456789");
  auto ops = cl.Client("opsop-token-0123456789");
  auto id = alice->Submit(CommandJob("mine", 1, "sleep 60"), "m.yaml", "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  Status denied = bob->Cancel(*id);
  EXPECT_EQ(denied.code(), StatusCode::kPermissionDenied) << denied.ToString();
  EXPECT_NE(denied.message().find("team-a"), std::string::npos) << denied.ToString();
  EXPECT_EQ(alice->GetJob(*id)->state(), "PENDING") << "the refused cancel changed nothing";
  ASSERT_TRUE(ops->Cancel(*id).ok()) << "an admin token cancels any tenant's job";
  EXPECT_EQ(alice->GetJob(*id)->state(), "CANCELLED");
  EXPECT_EQ(alice->GetJob(*id)->tenant(), "team-a");
}

TEST(CoordExtra, CurveAllowListAndTokens) {
  if (!wire::CurveAvailable()) GTEST_SKIP() << "libzmq without CURVE";
  Cluster cl("curve");
  const std::string keys = (cl.dir() / "keys").string(), allow = (cl.dir() / "allow").string();
  for (const char* n : {"coordinator", "alice", "worker", "mallory"}) {
    auto k = wire::GenerateCurveKeys();
    ASSERT_TRUE(k.ok());
    ASSERT_TRUE(wire::WriteKeyPair(keys, n, *k).ok());
  }
  std::filesystem::create_directories(allow);
  for (const char* n : {"alice", "worker"})
    std::filesystem::copy_file(keys + "/" + n + ".pub", allow + "/" + std::string(n) + ".pub");
  std::ofstream(cl.dir() / "tokens") << "# token tenant\nalice-token-0123456789 team-a\n";
  cl.StartCoordinator({"--key", keys + "/coordinator.key", "--allow", allow, "--tokens",
                       (cl.dir() / "tokens").string()});
  cl.StartWorker("w0", 2,
                 {"--server-key", keys + "/coordinator.pub", "--key", keys + "/worker.key"});
  auto client = [&](const std::string& who, const std::string& token) {
    wire::ChannelOptions o;
    o.endpoint = cl.endpoint();
    o.timeout = std::chrono::milliseconds(1500);
    o.token = token;
    o.server_public_key = *wire::ReadKeyFile(keys + "/coordinator.pub");
    o.public_key = *wire::ReadKeyFile(keys + "/" + who + ".pub");
    o.secret_key = *wire::ReadKeyFile(keys + "/" + who + ".key");
    return std::move(coordinator::CoordinatorClient::Connect(o)).value();
  };
  auto alice = client("alice", "alice-token-0123456789");
  bool up = false;
  for (int i = 0; i < 50 && !up; ++i) {
    auto w = alice->Workers();
    up = w.ok() && w->workers_size() == 1;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << "allow-listed worker and client get through";
  auto id = alice->Submit(CommandJob("sec", 1, "echo secured"), "s.yaml", "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = cl.WaitState(*alice, *id, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.tenant(), "team-a");
  // Train ranks rendezvous through the coordinator's KV, over CURVE with their worker's keys
  // (GANTRY_SERVER_KEY / GANTRY_CLIENT_KEY); they used to get none and time out.
  id = alice->Submit(
      "name: dp\nkind: train\nresources: {ranks: 2}\nmodel: {type: mlp, widths: [16, 32, 4]}\n"
      "data: {uri: synthetic, batch_per_rank: 8, synthetic_samples: 256}\n"
      "optimizer: {type: sgd, lr: 0.01}\ntrain: {steps: 10, log_every: 5}\n"
      "restarts: {max: 0}\n",
      "dp.yaml", cl.dir().string());
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  info = cl.WaitState(*alice, *id, {"SUCCEEDED", "FAILED"}, std::chrono::seconds(60));
  EXPECT_EQ(info.state(), "SUCCEEDED") << info.error() << "\n" << cl.Logs(*alice, *id);
  EXPECT_EQ(info.progress().step(), 10);
  auto anonymous = client("alice", "");
  EXPECT_EQ(anonymous->Submit(CommandJob("x", 1, "true"), "x.yaml", "").status().code(),
            StatusCode::kUnauthenticated);
  auto mallory = client("mallory", "alice-token-0123456789");
  EXPECT_EQ(mallory->Workers().status().code(), StatusCode::kDeadlineExceeded)
      << "a key outside the allow-list is refused at the handshake";
  EXPECT_NE(cl.ReadLog("coordinator").find("public key not in the allow-list"), std::string::npos);
}

}  // namespace
}  // namespace gantry::testing

#include "coordinator/coordinator_store.h"

namespace gantry::testing {
namespace {

// The comm bootstrap Store a rank gets from BootstrapFromCoordinator(), against a live job.
TEST(CoordExtra, CoordinatorStoreServesCommBootstrap) {
  Cluster cl("store");
  cl.StartCoordinator();
  cl.StartWorker("w0");
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(CommandJob("st", 1, "echo TOKEN=$GANTRY_TOKEN; sleep 30"), "st.yaml", "");
  ASSERT_TRUE(id.ok());
  cl.WaitState(*c, *id, {"RUNNING"});
  std::string token;
  for (int i = 0; i < 100 && token.empty(); ++i) {
    const std::string logs = cl.Logs(*c, *id);
    if (size_t p = logs.find("TOKEN="); p != std::string::npos) token = logs.substr(p + 6, 32);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(token.size(), 32u);
  setenv("GANTRY_COORDINATOR", cl.endpoint().c_str(), 1);
  setenv("GANTRY_JOB_ID", id->c_str(), 1);
  setenv("GANTRY_ATTEMPT", "0", 1);
  setenv("GANTRY_TOKEN", token.c_str(), 1);
  setenv("RANK", "0", 1);
  setenv("WORLD_SIZE", "2", 1);
  auto boot = coordinator::BootstrapFromCoordinator();
  ASSERT_TRUE(boot.ok()) << boot.status().ToString();
  comm::Store& store = (*boot)->store();
  // A Get parked on the coordinator is answered when another thread sets the key.
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_TRUE(store.Set("addr/1", "10.0.0.2:1234").ok());
  });
  auto v = store.Get("addr/1", std::chrono::milliseconds(5000));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "10.0.0.2:1234");
  EXPECT_EQ(*store.Add("count", 5), 5);
  EXPECT_EQ(store.Get("none", std::chrono::milliseconds(100)).status().code(),
            StatusCode::kDeadlineExceeded);
  for (const char* k : {"GANTRY_COORDINATOR", "GANTRY_JOB_ID", "GANTRY_ATTEMPT", "GANTRY_TOKEN",
                        "RANK", "WORLD_SIZE"})
    unsetenv(k);
  ASSERT_TRUE(c->Cancel(*id).ok());
}

}  // namespace
}  // namespace gantry::testing
