// Rows of bench/ddp_bench (report.h): ratio = ours / peer (higher is better), scaling =
// 2-rank / (2 x 1-rank), exposed comm = 1 - DDP / (the same ranks computing without comm).
// Throughputs are medians over rounds; every derived figure is the median over rounds of that
// round's own figure (both sides measured under the same background load), so a ratio need
// not equal ours / peer_value exactly.
#include "bench/ddp_bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace gantry::bench {
namespace {

using nlohmann::json;
using Opt = std::optional<double>;

constexpr double kTargetRatio = 1.5;
constexpr double kTargetExposed = 0.10;

Opt MedianOf(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }),
          v.end());
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median over rounds of f(a[i], b[i]): both figures of a pair share the round's load.
template <typename F>
Opt Paired(const Samples& s, const std::string& a, const std::string& b, F f) {
  auto x = s.find(a), y = s.find(b);
  if (x == s.end() || y == s.end()) return std::nullopt;
  std::vector<double> v;
  for (size_t i = 0; i < std::min(x->second.size(), y->second.size()); ++i)
    if (y->second[i] > 0) v.push_back(f(x->second[i], y->second[i]));
  return MedianOf(v);
}
Opt Ratio(const Samples& s, const std::string& a, const std::string& b) {
  return Paired(s, a, b, [](double x, double y) { return x / y; });
}
Opt Scaling(const Samples& s, const std::string& two, const std::string& one, int ranks) {
  return Paired(s, two, one, [ranks](double x, double y) { return x / (y * ranks); });
}
Opt Exposed(const Samples& s, const std::string& ddp, const std::string& nocomm) {
  return Paired(s, ddp, nocomm, [](double x, double y) { return 1.0 - x / y; });
}

std::string Fmt(Opt v, const char* f = "%.0f") {
  if (!v) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, *v);
  return buf;
}
std::string Pct(Opt v) { return v ? Fmt(*v * 100, "%.1f%%") : "-"; }

struct Rows {
  std::vector<json> json_rows;
  std::vector<std::vector<std::string>> table;  // case, ours, peer, ratio, target
};

json Row(const std::string& workload, const std::string& metric, Opt ours) {
  return {{"bench", "ddp"}, {"workload", workload}, {"metric", metric},
          {"ours", ours ? json(*ours) : json(nullptr)}};
}

void AddPeer(json& r, const std::string& peer, Opt value, Opt ratio) {
  if (!value) return;
  r["peer"] = peer;
  r["peer_value"] = *value;
  if (ratio) r["ratio"] = *ratio;
}

// Throughput, scaling and exposed communication of one backend of ours.
void AddBackend(const ReportInput& in, const std::string& b, Rows* out) {
  const Samples& s = *in.samples;
  const std::string& w = in.workload->name;
  const std::string a = BetterPeer(s), peer = "pytorch-ddp-" + a;
  const std::string ours_key = "ours-ddp-" + b, peer_key = "peer-ddp-" + a;
  const Opt ours = Median(s, ours_key), peer_ddp = Median(s, peer_key);
  const Opt ratio = Ratio(s, ours_key, peer_key);
  auto it = in.resolved.find(b);
  json r = Row(w, in.workload->metric, ours);
  r.update({{"backend", b}, {"ranks", in.ranks}});
  if (it != in.resolved.end()) r["backend_used"] = it->second;
  AddPeer(r, peer, peer_ddp, ratio);
  r["target"] = kTargetRatio;
  for (const char* alloc : {"glibc", "tcmalloc"})
    if (Opt v = Median(s, std::string("peer-ddp-") + alloc)) r[std::string("peer_") + alloc] = *v;
  out->json_rows.push_back(r);
  const std::string shown =
      b + (it != in.resolved.end() && it->second != b ? " (" + it->second + ")" : "");
  out->table.push_back({std::to_string(in.ranks) + " ranks, " + shown, Fmt(ours),
                        Fmt(peer_ddp) + " " + peer, Fmt(ratio, "%.2f"), ">= 1.5"});

  const Opt sc = Scaling(s, ours_key, "ours-1", in.ranks);
  const Opt peer_sc = Scaling(s, peer_key, "peer-single-" + a, in.ranks);
  json srow = Row(w, "scaling_efficiency", sc);
  srow["backend"] = b;
  AddPeer(srow, peer, peer_sc, sc && peer_sc && *peer_sc > 0 ? Opt(*sc / *peer_sc) : Opt());
  out->json_rows.push_back(srow);
  out->table.push_back({"  scaling 1 -> 2 ranks", Pct(sc), Pct(peer_sc), "", ""});

  const Opt ex = Exposed(s, ours_key, "ours-indep");
  const Opt peer_ex = Exposed(s, peer_key, "peer-nosync-" + a);
  const Opt engine = Median(s, "engine-comm-" + b);
  json erow = Row(w, "exposed_comm_share", ex);
  erow["backend"] = b;
  AddPeer(erow, peer, peer_ex, std::nullopt);  // lower is better: judged by the target
  erow["target"] = kTargetExposed;
  if (engine) erow["engine_comm_wait_share"] = *engine;
  out->json_rows.push_back(erow);
  out->table.push_back({"  exposed comm (vs no-comm run)", Pct(ex),
                        Pct(peer_ex) + " (vs no_sync)", "", "< 10%"});
  out->table.push_back({"  comm wait / step (engine log)", Pct(engine), "", "", "< 10%"});
}

void AddSingle(const ReportInput& in, Rows* out) {
  const Samples& s = *in.samples;
  const std::string a = BetterPeer(s);
  const Opt ours_1 = Median(s, "ours-1"), peer_1 = Median(s, "peer-single-" + a);
  const Opt ratio = Ratio(s, "ours-1", "peer-single-" + a);
  json r = Row(in.workload->name, in.workload->metric, ours_1);
  r["ranks"] = 1;
  AddPeer(r, "pytorch-" + a, peer_1, ratio);
  out->json_rows.push_back(r);
  out->table.push_back({"1 rank", Fmt(ours_1), Fmt(peer_1) + " pytorch-" + a,
                        Fmt(ratio, "%.2f"), ""});
  out->table.push_back({"2 x 1 rank, no comm", Fmt(Median(s, "ours-indep")),
                        Fmt(Median(s, "peer-nosync-" + a)) + " ddp no_sync", "", ""});
}

}  // namespace

std::optional<double> Median(const Samples& s, const std::string& key) {
  auto it = s.find(key);
  return it == s.end() ? std::nullopt : MedianOf(it->second);
}

std::string BetterPeer(const Samples& s) {
  const Opt g = Median(s, "peer-ddp-glibc"), t = Median(s, "peer-ddp-tcmalloc");
  return g && (!t || *g > *t) ? "glibc" : "tcmalloc";
}

void PrintReport(const ReportInput& in, bool as_json) {
  Rows rows;
  for (const auto& b : in.backends) AddBackend(in, b, &rows);
  AddSingle(in, &rows);
  if (as_json) {
    for (const auto& r : rows.json_rows) std::printf("%s\n", r.dump().c_str());
    return;
  }
  const Workload& w = *in.workload;
  std::printf("\n%s, %s (%d ranks x 1 thread on this host, batch %d/rank, median of %d)\n",
              w.name.c_str(), w.metric == "tokens_per_s" ? "tokens/s" : "samples/s", in.ranks,
              w.batch, in.rounds);
  std::printf("  %-32s %8s  %-34s %6s  %s\n", "case", "ours", "peer", "ratio", "target");
  for (const auto& t : rows.table)
    std::printf("  %-32s %8s  %-34s %6s  %s\n", t[0].c_str(), t[1].c_str(), t[2].c_str(),
                t[3].c_str(), t[4].c_str());
  std::printf("  peer candidates: pytorch-ddp glibc %s, tcmalloc %s\n",
              Fmt(Median(*in.samples, "peer-ddp-glibc")).c_str(),
              Fmt(Median(*in.samples, "peer-ddp-tcmalloc")).c_str());
}

}  // namespace gantry::bench
