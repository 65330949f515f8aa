// comm_test_worker: one rank of the multi-process comm tests, started by comm_launcher.h with
// RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT and GANTRY_COMM_BACKEND set.
//   comm_test_worker conformance [--big]  every collective x dtype x op x count vs a reference
//   comm_test_worker loop                 64 MiB allreduces until an error (kill -9 test)
//   comm_test_worker loop-symmetric       the same, in place on symmetric memory
//   comm_test_worker mismatch KIND RANKS [COUNT]  ranks in RANKS (e.g. "2,3") call the
//                                         collective KIND with other arguments (see Mismatch)
// Conformance also checks in-place allreduces on symmetric memory where the backend has it
// (printing "SYMMETRIC <checks>"), ordinary memory on ranks whose backend has none.
// Prints "PASS <checks>" and exits 0, or prints the failure and exits 1 (3: comm error in loop).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "comm/factory.h"
#include "comm/reduce.h"

using namespace gantry;
using namespace gantry::comm;

namespace {

// Small integers (sums stay exact in every dtype) that do not repeat with any short period, so a
// block landing at the wrong offset shows: a hash of (rank, index) taken mod 9.
int Val(int rank, size_t i) {
  uint64_t h = (static_cast<uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull ^
               (static_cast<uint64_t>(rank) + 1) * 0xC2B2AE3D27D4EB4Full;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return static_cast<int>(h % 9) - 4;
}

void Put(DataType d, void* p, size_t i, double v) {
  switch (d) {
    case DataType::kF32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DataType::kI32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DataType::kBF16: static_cast<uint16_t*>(p)[i] = FloatToBF16(static_cast<float>(v)); break;
    case DataType::kF16: static_cast<uint16_t*>(p)[i] = FloatToF16(static_cast<float>(v)); break;
  }
}

double Get(DataType d, const void* p, size_t i) {
  switch (d) {
    case DataType::kF32: return static_cast<const float*>(p)[i];
    case DataType::kI32: return static_cast<const int32_t*>(p)[i];
    case DataType::kBF16: return BF16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DataType::kF16: return F16ToFloat(static_cast<const uint16_t*>(p)[i]);
  }
  return 0;
}

// What a correct backend must produce: exact, because inputs are small integers and avg is
// computed as (exact sum) * (1/n) in f32, or truncating division for i32.
double Expected(DataType d, ReduceOp op, int n, size_t i, int offset_rank_block = 0) {
  double acc = op == ReduceOp::kMax ? -1e30 : op == ReduceOp::kMin ? 1e30 : 0;
  for (int r = 0; r < n; ++r) {
    double v = Val(r, i + offset_rank_block);
    acc = op == ReduceOp::kMax ? std::max(acc, v) : op == ReduceOp::kMin ? std::min(acc, v) : acc + v;
  }
  if (op == ReduceOp::kAvg) {
    if (d == DataType::kI32) return static_cast<int32_t>(acc) / n;
    float f = static_cast<float>(acc) * (1.0f / static_cast<float>(n));
    char tmp[4];
    Put(d, tmp, 0, f);
    return Get(d, tmp, 0);
  }
  return acc;
}

struct Ctx {
  Communicator* comm;
  std::vector<char> a, b;  // preallocated once, reused (fresh pages are slow)
  char* sym = nullptr;     // symmetric memory: in-place allreduces use it instead of `a`
  long checks = 0;
  int Fail(const std::string& what) {
    std::fprintf(stderr, "FAIL rank %d: %s\n", comm->rank(), what.c_str());
    return 1;
  }
};

std::string Name(const char* op, DataType d, ReduceOp o, size_t count) {
  return std::string(op) + " " + std::string(DataTypeName(d)) + " " + std::string(ReduceOpName(o)) +
         " count " + std::to_string(count);
}

int CheckAllreduce(Ctx& c, DataType d, ReduceOp op, size_t count, bool in_place) {
  const int n = c.comm->size(), r = c.comm->rank();
  char* in = in_place && c.sym != nullptr ? c.sym : c.a.data();
  for (size_t i = 0; i < count; ++i) Put(d, in, i, Val(r, i));
  void* out = in_place ? in : c.b.data();
  Status s = c.comm->Allreduce(in, out, count, d, op)->Wait();
  if (!s.ok()) return c.Fail(Name("allreduce", d, op, count) + ": " + s.ToString());
  for (size_t i = 0; i < count; ++i) {
    double want = Expected(d, op, n, i), got = Get(d, out, i);
    if (got != want) {
      return c.Fail(Name("allreduce", d, op, count) + (in_place ? " in-place" : "") + ": [" +
                    std::to_string(i) + "] = " + std::to_string(got) + ", want " + std::to_string(want));
    }
  }
  ++c.checks;
  return 0;
}

int CheckReduceScatter(Ctx& c, DataType d, ReduceOp op, size_t count) {
  const int n = c.comm->size(), r = c.comm->rank();
  for (size_t i = 0; i < count * n; ++i) Put(d, c.a.data(), i, Val(r, i));
  Status s = c.comm->ReduceScatter(c.a.data(), c.b.data(), count, d, op)->Wait();
  if (!s.ok()) return c.Fail(Name("reduce_scatter", d, op, count) + ": " + s.ToString());
  for (size_t i = 0; i < count; ++i) {
    double want = Expected(d, op, n, i, static_cast<int>(r * count)), got = Get(d, c.b.data(), i);
    if (got != want) return c.Fail(Name("reduce_scatter", d, op, count) + ": [" + std::to_string(i) + "]");
  }
  ++c.checks;
  return 0;
}

int CheckAllgather(Ctx& c, DataType d, size_t count) {
  const int n = c.comm->size(), r = c.comm->rank();
  for (size_t i = 0; i < count; ++i) Put(d, c.a.data(), i, Val(r, i));
  Status s = c.comm->Allgather(c.a.data(), c.b.data(), count, d)->Wait();
  if (!s.ok()) return c.Fail(Name("allgather", d, ReduceOp::kSum, count) + ": " + s.ToString());
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < count; ++i) {
      if (Get(d, c.b.data(), q * count + i) != Val(q, i)) {
        return c.Fail(Name("allgather", d, ReduceOp::kSum, count) + ": block " + std::to_string(q));
      }
    }
  }
  ++c.checks;
  return 0;
}

int CheckBroadcast(Ctx& c, DataType d, size_t count, int root) {
  const int r = c.comm->rank();
  for (size_t i = 0; i < count; ++i) Put(d, c.a.data(), i, Val(r, i));
  Status s = c.comm->Broadcast(c.a.data(), count, d, root)->Wait();
  if (!s.ok()) return c.Fail(Name("broadcast", d, ReduceOp::kSum, count) + ": " + s.ToString());
  for (size_t i = 0; i < count; ++i) {
    if (Get(d, c.a.data(), i) != Val(root, i)) {
      return c.Fail(Name("broadcast", d, ReduceOp::kSum, count) + " root " + std::to_string(root));
    }
  }
  ++c.checks;
  return 0;
}

int CheckSendRecv(Ctx& c, size_t count) {
  const int n = c.comm->size(), r = c.comm->rank();
  if (n == 1) return 0;
  for (size_t i = 0; i < count; ++i) Put(DataType::kF32, c.a.data(), i, Val(r, i));
  auto sw = c.comm->Send(c.a.data(), count, DataType::kF32, (r + 1) % n, 5);
  auto rw = c.comm->Recv(c.b.data(), count, DataType::kF32, (r + n - 1) % n, 5);
  Status s1 = sw->Wait(), s2 = rw->Wait();
  if (!s1.ok() || !s2.ok()) return c.Fail("send/recv: " + s1.ToString() + " / " + s2.ToString());
  for (size_t i = 0; i < count; ++i) {
    if (Get(DataType::kF32, c.b.data(), i) != Val((r + n - 1) % n, i)) return c.Fail("send/recv data");
  }
  ++c.checks;
  return 0;
}

int Conformance(Communicator* comm, bool big) {
  const int n = comm->size();
  std::vector<size_t> counts = {0, 1, 7, 1023, (1u << 20) + 3};
  if (big) counts.push_back(16u << 20);  // 64 MiB of f32
  Ctx c{comm};
  c.a.resize((big ? 64u << 20 : 4u << 20) * std::max(1, n) + 64);
  c.b.resize(c.a.size());
  const DataType dtypes[] = {DataType::kF32, DataType::kBF16, DataType::kF16, DataType::kI32};
  const ReduceOp ops[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};
  int step = 0;
  for (size_t count : counts) {
    const bool huge = count > (2u << 20);
    for (DataType d : dtypes) {
      if (huge && d != DataType::kF32) continue;
      for (ReduceOp op : ops) {
        if (huge && op != ReduceOp::kSum) continue;
        if (CheckAllreduce(c, d, op, count, (step++ % 2) == 0)) return 1;
      }
      if (huge) continue;
      size_t rs_count = count > 4096 ? count / n : count;
      for (ReduceOp op : ops) {
        if (CheckReduceScatter(c, d, op, rs_count)) return 1;
      }
      if (CheckAllgather(c, d, rs_count)) return 1;
      if (CheckBroadcast(c, d, count, static_cast<int>(count % n))) return 1;
    }
    if (!huge && CheckSendRecv(c, count)) return 1;
    Status s = comm->Barrier()->Wait();
    if (!s.ok()) return c.Fail("barrier: " + s.ToString());
  }
  for (int root = 0; root < n; ++root) {
    if (CheckBroadcast(c, DataType::kF32, 1000, root)) return 1;
  }
  // In place on symmetric memory (1 Mi + 3 f32 elements are above shm's window threshold).
  auto sym = comm->AllocateSymmetric(((1u << 20) + 3) * sizeof(float));
  if (!sym.ok()) return c.Fail("allocate_symmetric: " + sym.status().ToString());
  c.sym = static_cast<char*>(sym->get());
  const long before = c.checks;
  for (size_t count : {size_t(7), size_t(200000), size_t(1u << 20) + 3}) {
    for (DataType d : dtypes) {
      for (ReduceOp op : ops) {
        if (CheckAllreduce(c, d, op, count, /*in_place=*/true)) return 1;
      }
    }
  }
  if (c.sym != nullptr) std::printf("SYMMETRIC %ld checks\n", c.checks - before);
  c.sym = nullptr;
  std::printf("PASS %ld checks on rank %d of %d (%s)\n", c.checks, comm->rank(), n,
              std::string(comm->backend()).c_str());
  return 0;
}

int Loop(Communicator* comm, bool symmetric) {
  constexpr size_t kCount = 16u << 20;
  std::vector<float> own;
  std::shared_ptr<void> sym;
  float* buf = nullptr;
  if (symmetric) {
    auto m = comm->AllocateSymmetric(kCount * sizeof(float));
    if (!m.ok() || *m == nullptr) {
      std::fprintf(stderr, "FAIL no symmetric memory: %s\n",
                   m.ok() ? "backend has none" : m.status().ToString().c_str());
      return 1;
    }
    sym = *m;
    buf = static_cast<float*>(sym.get());
  } else {
    own.resize(kCount);
    buf = own.data();
  }
  std::fill(buf, buf + kCount, 1.0f);
  std::printf("READY rank %d\n", comm->rank());
  std::fflush(stdout);
  for (int i = 0; i < 100000; ++i) {
    Status s = comm->Allreduce(buf, buf, kCount, DataType::kF32, ReduceOp::kSum)->Wait();
    if (!s.ok()) {
      std::fprintf(stderr, "COMM ERROR: %s\n", s.ToString().c_str());
      return 3;
    }
  }
  return 0;
}

// Rank 0 sends 2000 floats, rank 1 receives 1000: rank 1's receive must fail naming the
// mismatch, and the communicator must then be broken (the next collective fails at once).
int TruncatedRecv(Communicator* comm) {
  std::vector<float> buf(2000, 1.0f);
  if (comm->rank() == 0) {
    Status s = comm->Send(buf.data(), 2000, DataType::kF32, 1, 9)->Wait();
    std::printf("rank 0 send: %s\n", s.ToString().c_str());
    return 0;
  }
  if (comm->rank() != 1) return 0;
  Status s = comm->Recv(buf.data(), 1000, DataType::kF32, 0, 9)->Wait();
  std::printf("rank 1 recv: %s\n", s.ToString().c_str());
  if (s.ok()) return 1;
  Status next = comm->Allreduce(buf.data(), buf.data(), 10, DataType::kF32, ReduceOp::kSum)->Wait();
  std::printf("rank 1 next allreduce: %s\n", next.ToString().c_str());
  if (next.ok()) return 1;
  std::printf("MISMATCH BROKE THE COMMUNICATOR\n");
  std::fflush(stdout);
  return 0;
}

// The ranks listed in `deviants` ("3" or "2,3") call a collective with other arguments than
// the rest: KIND bcast-root (root 1 instead of 0), bcast-self-root (itself as root instead of
// 0), avg (allreduce avg instead of sum), rs-avg (reduce_scatter avg instead of sum), or
// p2p-tag (rank 0 sends tag 7, rank 1 receives tag 8; no deviants). Prints "OP <code>: <msg>"
// ("OP OK" plus "WRONG DATA" when the data is not what this rank asked for), then
// "NEXT <code>" for an allreduce and a barrier after it. Exit 0 unless setup failed.
int Mismatch(Communicator* comm, const std::string& kind, const std::string& deviants,
             size_t count) {
  const int r = comm->rank(), n = comm->size();
  bool odd = false;
  for (size_t at = 0; at < deviants.size();) {
    const size_t comma = std::min(deviants.find(',', at), deviants.size());
    odd = odd || std::atoi(deviants.substr(at, comma - at).c_str()) == r;
    at = comma + 1;
  }
  std::vector<float> a(count * n, static_cast<float>(r + 1)), b(count * n, 0.0f);
  Status s;
  bool right = true;
  if (kind == "bcast-root" || kind == "bcast-self-root") {
    const int root = !odd ? 0 : kind == "bcast-root" ? 1 : r;
    s = comm->Broadcast(a.data(), count, DataType::kF32, root)->Wait();
    right = a[0] == static_cast<float>(root + 1) && a[count - 1] == a[0];
  } else if (kind == "avg" || kind == "rs-avg") {
    const ReduceOp op = odd ? ReduceOp::kAvg : ReduceOp::kSum;
    s = kind == "avg" ? comm->Allreduce(a.data(), b.data(), count, DataType::kF32, op)->Wait()
                      : comm->ReduceScatter(a.data(), b.data(), count, DataType::kF32, op)->Wait();
    const float sum = static_cast<float>(n * (n + 1) / 2);
    right = b[0] == (odd ? sum * (1.0f / static_cast<float>(n)) : sum);
  } else if (kind == "p2p-tag") {
    if (r == 0) s = comm->Send(a.data(), count, DataType::kF32, 1, 7)->Wait();
    if (r == 1) s = comm->Recv(b.data(), count, DataType::kF32, 0, 8)->Wait();
  } else {
    std::fprintf(stderr, "FAIL unknown mismatch kind %s\n", kind.c_str());
    return 1;
  }
  std::printf("OP %s\n", s.ToString().c_str());
  if (s.ok() && !right) std::printf("WRONG DATA\n");
  std::fflush(stdout);
  Status next = comm->Allreduce(std::span<float>(b.data(), 16))->Wait();
  std::printf("NEXT %s\n", next.ToString().c_str());
  std::printf("NEXT %s\n", comm->Barrier()->Wait().ToString().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario = argc > 1 ? argv[1] : "conformance";
  bool big = argc > 2 && std::strcmp(argv[2], "--big") == 0;
  CommOptions options;
  auto session = CreateCommunicatorFromEnvironment(options);
  if (!session.ok()) {
    std::fprintf(stderr, "FAIL setup: %s\n", session.status().ToString().c_str());
    return 1;
  }
  Communicator* comm = session->comm.get();
  int rc = scenario == "loop"             ? Loop(comm, false)
           : scenario == "loop-symmetric" ? Loop(comm, true)
           : scenario == "truncated-recv" ? TruncatedRecv(comm)
           : scenario == "mismatch"
               ? Mismatch(comm, argc > 2 ? argv[2] : "", argc > 3 ? argv[3] : "",
                          argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 1000)
                                          : Conformance(comm, big);
  std::fflush(stdout);
  return rc;
}
