// Rows of bench/ddp_bench (report.h): ratio = ours / peer (higher is better), scaling =
// 2-rank / (2 x 1-rank), exposed comm = 1 - DDP / (the same ranks computing without comm).
#include "bench/ddp_bench/report.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace gantry::bench {
namespace {

using nlohmann::json;
using Opt = std::optional<double>;

constexpr double kTargetRatio = 1.5;
constexpr double kTargetExposed = 0.10;

Opt Div(Opt x, Opt y) { return x && y && *y > 0 ? Opt(*x / *y) : std::nullopt; }
Opt Scaling(Opt two, Opt one, int ranks) { return one ? Div(two, *one * ranks) : std::nullopt; }
Opt Exposed(Opt ddp, Opt nocomm) {
  const Opt r = Div(ddp, nocomm);
  return r ? Opt(1.0 - *r) : std::nullopt;
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

void AddPeer(json& r, const std::string& peer, Opt value, Opt ours, bool ratio) {
  if (!value) return;
  r["peer"] = peer;
  r["peer_value"] = *value;
  if (auto x = Div(ours, value); ratio && x) r["ratio"] = *x;
}

// Throughput, scaling and exposed communication of one backend of ours.
void AddBackend(const ReportInput& in, const std::string& b, Rows* out) {
  const Samples& s = *in.samples;
  const std::string& w = in.workload->name;
  const std::string a = BetterPeer(s), peer = "pytorch-ddp-" + a;
  const Opt ours = Median(s, "ours-ddp-" + b), peer_ddp = Median(s, "peer-ddp-" + a);
  const Opt ours_1 = Median(s, "ours-1"), peer_1 = Median(s, "peer-single-" + a);
  auto it = in.resolved.find(b);
  json r = Row(w, in.workload->metric, ours);
  r.update({{"backend", b}, {"ranks", in.ranks}});
  if (it != in.resolved.end()) r["backend_used"] = it->second;
  AddPeer(r, peer, peer_ddp, ours, true);
  r["target"] = kTargetRatio;
  for (const char* alloc : {"glibc", "tcmalloc"})
    if (Opt v = Median(s, std::string("peer-ddp-") + alloc)) r[std::string("peer_") + alloc] = *v;
  out->json_rows.push_back(r);
  const std::string shown =
      b + (it != in.resolved.end() && it->second != b ? " (" + it->second + ")" : "");
  out->table.push_back({std::to_string(in.ranks) + " ranks, " + shown, Fmt(ours),
                        Fmt(peer_ddp) + " " + peer, Fmt(Div(ours, peer_ddp), "%.2f"), ">= 1.5"});

  const Opt sc = Scaling(ours, ours_1, in.ranks), peer_sc = Scaling(peer_ddp, peer_1, in.ranks);
  json srow = Row(w, "scaling_efficiency", sc);
  srow["backend"] = b;
  AddPeer(srow, peer, peer_sc, sc, true);
  out->json_rows.push_back(srow);
  out->table.push_back({"  scaling 1 -> 2 ranks", Pct(sc), Pct(peer_sc), "", ""});

  const Opt ex = Exposed(ours, Median(s, "ours-indep"));
  const Opt peer_ex = Exposed(peer_ddp, Median(s, "peer-nosync-" + a));
  const Opt engine = Median(s, "engine-comm-" + b);
  json erow = Row(w, "exposed_comm_share", ex);
  erow["backend"] = b;
  AddPeer(erow, peer, peer_ex, ex, false);  // lower is better: judged by the target
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
  json r = Row(in.workload->name, in.workload->metric, ours_1);
  r["ranks"] = 1;
  AddPeer(r, "pytorch-" + a, peer_1, ours_1, true);
  out->json_rows.push_back(r);
  out->table.push_back({"1 rank", Fmt(ours_1), Fmt(peer_1) + " pytorch-" + a,
                        Fmt(Div(ours_1, peer_1), "%.2f"), ""});
  out->table.push_back({"2 x 1 rank, no comm", Fmt(Median(s, "ours-indep")),
                        Fmt(Median(s, "peer-nosync-" + a)) + " ddp no_sync", "", ""});
}

}  // namespace

std::optional<double> Median(const Samples& s, const std::string& key) {
  auto it = s.find(key);
  if (it == s.end() || it->second.empty()) return std::nullopt;
  std::vector<double> v = it->second;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
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
