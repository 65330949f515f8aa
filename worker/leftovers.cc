// Leftover rank processes: environment markers, the worker's children, live workers.
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

bool IsLiveWorker(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  if (!(stat >> pid_field >> comm >> state) || state == "Z") return false;
  if (EnvOf(pid, kWorkerDirEnv)) return false;  // a rank's process, not a worker
  std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string arg;
  bool gantry = false, worker = false;
  for (int i = 0; std::getline(cmdline, arg, '\0'); ++i) {
    if (i == 0) gantry = arg.find("gantry") != std::string::npos;
    worker = worker || arg == "worker";
  }
  return gantry && worker;
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
