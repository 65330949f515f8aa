// CPU sets: affinity mask, cpu_set_t construction, cpulist strings.
#include "base/cpu_set.h"

#include <algorithm>
#include <cerrno>

namespace gantry {

StatusOr<std::vector<int>> AffinityCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return ErrnoError("sched_getaffinity", errno);
  std::vector<int> out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  return out;
}

StatusOr<cpu_set_t> ToCpuSet(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) {
    if (c < 0 || c >= CPU_SETSIZE) {
      return InvalidArgumentError("CPU " + std::to_string(c) + " out of range [0, " +
                                  std::to_string(CPU_SETSIZE) + ")");
    }
    CPU_SET(c, &set);
  }
  return set;
}

std::string CpuListString(const std::vector<int>& cpus) {
  std::vector<int> c = cpus;
  std::sort(c.begin(), c.end());
  c.erase(std::unique(c.begin(), c.end()), c.end());
  std::string out;
  for (size_t i = 0; i < c.size();) {
    size_t j = i;
    while (j + 1 < c.size() && c[j + 1] == c[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(c[i]);
    if (j > i) out += "-" + std::to_string(c[j]);
    i = j + 1;
  }
  return out;
}

}  // namespace gantry
