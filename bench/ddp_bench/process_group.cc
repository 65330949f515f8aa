// ProcessGroup: fork/exec with per-child environment and log file; reaping with a deadline.
#include "bench/ddp_bench/process_group.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "base/exec_image.h"


namespace gantry::bench {
namespace {

std::string Describe(int wstatus) {
  if (WIFEXITED(wstatus)) return "exited with status " + std::to_string(WEXITSTATUS(wstatus));
  if (WIFSIGNALED(wstatus)) return std::string("killed by signal ") + strsignal(WTERMSIG(wstatus));
  return "stopped";
}

}  // namespace

Status ProcessGroup::Start(const ChildSpec& spec) {
  if (spec.argv.empty()) return InvalidArgumentError("ProcessGroup::Start: empty argv");
  const ExecImage image(spec.argv, spec.env, spec.unset_env);  // built before fork
  std::string name;
  for (const auto& a : spec.argv) name += (name.empty() ? "" : " ") + a;
  const int fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("open log file " + spec.log_path, errno);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return ErrnoError("fork for " + spec.argv[0], errno);
  }
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execvpe(image.program(), image.argv(), image.envp());
    (void)!::write(2, "exec failed: ", 13);
    (void)!::write(2, image.program(), std::strlen(image.program()));
    ::_exit(127);
  }
  ::close(fd);
  children_.push_back({pid, name, spec.log_path, false});
  return OkStatus();
}

Status ProcessGroup::WaitAll(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    bool running = false;
    for (auto& c : children_) {
      if (c.done) continue;
      int ws = 0;
      const pid_t r = ::waitpid(c.pid, &ws, WNOHANG);
      if (r == 0) {
        running = true;
        continue;
      }
      c.done = true;
      if (r < 0) continue;  // already reaped elsewhere
      if (!(WIFEXITED(ws) && WEXITSTATUS(ws) == 0)) {
        KillAll();
        return AbortedError("`" + c.name + "` " + Describe(ws) + "; its output is in " +
                            c.log_path);
      }
    }
    if (!running) return OkStatus();
    if (std::chrono::steady_clock::now() > deadline) {
      KillAll();
      return DeadlineExceededError("benchmark processes still running after " +
                                   std::to_string(timeout.count()) +
                                   " s (killed); logs: " + children_.front().log_path + " ...");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void ProcessGroup::KillAll() {
  for (auto& c : children_) {
    if (c.done || c.pid <= 0) continue;
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, nullptr, 0);
    c.done = true;
  }
}

StatusOr<int> FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("socket for a free port", errno);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoError("bind 127.0.0.1:0 for a free port", err);
  }
  ::close(fd);
  return int(ntohs(a.sin_port));
}

}  // namespace gantry::bench
