// Leftover rank processes: environment markers, children, the worker directory's lock.
#include "worker/leftovers.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace gantry::worker {

std::optional<std::string> EnvOf(pid_t pid, const std::string& name) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  if (!f) return std::nullopt;
  const std::string prefix = name + "=";
  std::string entry;
  while (std::getline(f, entry, '\0')) {
    if (entry.compare(0, prefix.size(), prefix) == 0) return entry.substr(prefix.size());
  }
  return std::nullopt;
}

std::vector<pid_t> ChildrenExcept(const std::set<pid_t>& leaders) {
  std::vector<pid_t> out;
  DIR* tasks = opendir("/proc/self/task");
  if (!tasks) return out;
  std::set<pid_t> seen;
  while (dirent* t = readdir(tasks)) {
    if (t->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + t->d_name + "/children");
    for (pid_t c; f >> c;) {
      if (!leaders.count(c) && seen.insert(c).second) out.push_back(c);
    }
  }
  closedir(tasks);
  return out;
}

std::vector<pid_t> ProcessesOfWorkerDir(const std::string& dir) {
  std::vector<pid_t> out;
  DIR* proc = opendir("/proc");
  if (!proc) return out;
  const pid_t self = getpid();
  while (dirent* e = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    if (EnvOf(pid_t(pid), kWorkerDirEnv) == dir) out.push_back(pid_t(pid));
  }
  closedir(proc);
  return out;
}

}  // namespace gantry::worker
