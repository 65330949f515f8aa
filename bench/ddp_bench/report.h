// Figures of bench/ddp_bench: samples per case, their medians, and the rows they become
// (a human table, or --json rows in the format of ../shared/notes/workloads.md).
// Case keys: ours-ddp-<backend>, ours-indep (2 independent 1-rank trainers), ours-1,
// engine-comm-<backend> (comm-wait share from our step logs), peer-ddp-<alloc>,
// peer-nosync-<alloc>, peer-single-<alloc> with alloc = glibc | tcmalloc.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bench/ddp_bench/runs.h"

namespace gantry::bench {

// Sample i of each case is round i; NaN when that run failed or was not run that round.
using Samples = std::map<std::string, std::vector<double>>;

std::optional<double> Median(const Samples& s, const std::string& key);
// The allocator of the better PyTorch DDP run so far ("tcmalloc" before any figure).
std::string BetterPeer(const Samples& s);

struct ReportInput {
  const Workload* workload = nullptr;
  const Samples* samples = nullptr;
  std::vector<std::string> backends;
  std::map<std::string, std::string> resolved;  // backend asked -> backend ours logged
  int ranks = 2;
  int rounds = 1;
};

// Prints the workload's rows: JSON lines when `json`, else its table.
void PrintReport(const ReportInput& in, bool json);

}  // namespace gantry::bench
