// CpuPool: lowest-first exclusive CPU hand-out.
#include "worker/cpu_pool.h"

#include <algorithm>

namespace gantry::worker {

CpuPool::CpuPool(std::vector<int> cpus) : cpus_(std::move(cpus)) {
  std::sort(cpus_.begin(), cpus_.end());
  cpus_.erase(std::unique(cpus_.begin(), cpus_.end()), cpus_.end());
  used_.assign(cpus_.size(), false);
}

std::optional<CpuPool> CpuPool::ForSlots(int slots, const std::vector<int>& allowed) {
  if (allowed.empty() || slots > int(allowed.size())) return std::nullopt;
  std::vector<int> cpus = allowed;
  std::sort(cpus.begin(), cpus.end());
  if (slots > 0) cpus.resize(size_t(slots));
  return CpuPool(std::move(cpus));
}

std::optional<std::vector<int>> CpuPool::Take(int n) {
  if (n <= 0 || size_t(n) > free_count()) return std::nullopt;
  std::vector<int> out;
  for (size_t i = 0; i < cpus_.size() && int(out.size()) < n; ++i) {
    if (used_[i]) continue;
    used_[i] = true;
    out.push_back(cpus_[i]);
  }
  return out;
}

void CpuPool::Give(const std::vector<int>& cpus) {
  for (int c : cpus) {
    auto it = std::lower_bound(cpus_.begin(), cpus_.end(), c);
    if (it != cpus_.end() && *it == c) used_[size_t(it - cpus_.begin())] = false;
  }
}

size_t CpuPool::free_count() const {
  return size_t(std::count(used_.begin(), used_.end(), false));
}

}  // namespace gantry::worker
