// LocalCluster: spawn, readiness checks and teardown of a one-host cluster.
#include "coordinator/local_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "coordinator/client.h"

namespace gantry::coordinator {

namespace {
int FreePort() {
  // Let the kernel choose, then release it: the coordinator binds it right after.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}
}  // namespace

StatusOr<pid_t> LocalCluster::Spawn(const std::string& name, const std::vector<std::string>& args) {
  const std::string log = opt_.dir + "/logs/" + name + ".log";
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("opening " + log, errno);
  std::vector<std::string> argv = args;
  argv.insert(argv.begin(), opt_.exe);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(fd);
    return ErrnoError("fork for " + name, errno);
  }
  if (pid == 0) {
    // The cluster dies with `gantry up`, even when it is killed with SIGKILL: orphans kept
    // running jobs, and a second `gantry up` on the same --dir ran them again.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  close(fd);
  children_.push_back({name, pid});
  return pid;
}

Status LocalCluster::Start() {
  if (opt_.exe.empty()) opt_.exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::error_code ec;
  std::filesystem::create_directories(opt_.dir + "/logs", ec);
  if (ec) return ErrnoError("creating " + opt_.dir + "/logs", ec.value());
  const int port = opt_.port > 0 ? opt_.port : FreePort();
  endpoint_ = "tcp://127.0.0.1:" + std::to_string(port);
  std::vector<std::string> args = {"coordinator", "--bind", endpoint_, "--dir", opt_.dir};
  if (opt_.metrics_port >= 0) {
    args.push_back("--metrics-port");
    args.push_back(std::to_string(opt_.metrics_port));
  }
  args.insert(args.end(), opt_.coordinator_args.begin(), opt_.coordinator_args.end());
  GANTRY_RETURN_IF_ERROR(Spawn("coordinator", args).status());
  for (int i = 0; i < opt_.workers; ++i) {
    const std::string id = "worker-" + std::to_string(i);
    std::vector<std::string> wargs = {"worker", "--coordinator", endpoint_,          "--id",
                                      id,       "--dir",         opt_.dir + "/" + id};
    if (opt_.cpus_per_worker > 0)
      wargs.insert(wargs.end(), {"--cpus", std::to_string(opt_.cpus_per_worker)});
    if (opt_.gpus_per_worker >= 0)
      wargs.insert(wargs.end(), {"--gpus", std::to_string(opt_.gpus_per_worker)});
    GANTRY_RETURN_IF_ERROR(Spawn(id, wargs).status());
  }
  wire::ChannelOptions co;
  co.endpoint = endpoint_;
  co.timeout = std::chrono::milliseconds(500);
  GANTRY_ASSIGN_OR_RETURN(auto client, CoordinatorClient::Connect(co));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  Status last = UnavailableError("no answer yet");
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto dead = Dead(); !dead.empty())
      return UnavailableError("local cluster: " + dead[0] + "; see " + opt_.dir + "/logs/");
    auto workers = client->Workers();
    if (workers.ok() && workers->workers_size() >= opt_.workers) {
      std::ofstream(opt_.dir + "/coordinator") << endpoint_ << "\n";
      wrote_endpoint_ = true;
      return OkStatus();
    }
    last = workers.ok() ? UnavailableError(std::to_string(workers->workers_size()) + " of " +
                                           std::to_string(opt_.workers) + " workers registered")
                        : workers.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status(DeadlineExceededError("local cluster did not come up within 15 s: " +
                                      last.message() + "; see " + opt_.dir + "/logs/"));
}

std::vector<std::string> LocalCluster::Dead() {
  std::vector<std::string> out;
  for (Child& c : children_) {
    if (c.reaped) continue;
    int status = 0;
    if (waitpid(c.pid, &status, WNOHANG) == c.pid) {
      c.reaped = true;
      out.push_back(c.name + " exited (" +
                    (WIFEXITED(status) ? "code " + std::to_string(WEXITSTATUS(status))
                                       : "signal " + std::to_string(WTERMSIG(status))) +
                    ")");
    }
  }
  return out;
}

void LocalCluster::Stop() {
  // Workers first (they stop their ranks), then the coordinator.
  for (auto it = children_.rbegin(); it != children_.rend(); ++it)
    if (!it->reaped) kill(it->pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  for (Child& c : children_) {
    while (!c.reaped) {
      int status = 0;
      if (waitpid(c.pid, &status, WNOHANG) == c.pid) {
        c.reaped = true;
      } else if (std::chrono::steady_clock::now() > deadline) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &status, 0);
        c.reaped = true;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  children_.clear();
  // Only a file this cluster wrote: a second `gantry up` refused on the same --dir must not
  // remove the running cluster's endpoint.
  if (wrote_endpoint_) {
    std::error_code ec;
    std::filesystem::remove(opt_.dir + "/coordinator", ec);
  }
}

}  // namespace gantry::coordinator
