// RankProcess: fork/exec into a new process group, pipes, reaping, group signals.
#include "worker/rank_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/cpu_set.h"
#include "base/exec_image.h"
#include "base/logging.h"
#include "proto/wire.h"


namespace gantry::worker {

StatusOr<std::unique_ptr<RankProcess>> RankProcess::Start(const LaunchSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty())
    return InvalidArgumentError("a rank needs a program to run: command.argv is empty");
  struct stat st {};
  if (!spec.workdir.empty() && (stat(spec.workdir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)))
    return InvalidArgumentError("working directory " + spec.workdir +
                                " does not exist on this worker");
  const ExecImage image(spec.argv, spec.env);  // built before fork
  GANTRY_ASSIGN_OR_RETURN(const cpu_set_t cpus, ToCpuSet(spec.cpus));
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoError("pipe for rank stdout", errno);
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return ErrnoError("pipe for rank stderr", errno);
  }
  // The child reports a failed chdir or exec here ({stage, errno}); a successful exec closes
  // it (close-on-exec), so the parent reads nothing. The failure then comes back from Start
  // naming the program and the reason, instead of as a bare "exit 127".
  int exec_report[2];
  if (pipe2(exec_report, O_CLOEXEC) != 0) {
    for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);
    return ErrnoError("pipe for the rank's exec report", errno);
  }
  const pid_t agent = getpid();
  // Signals stay blocked across fork until the child has reset every handler: a SIGTERM from
  // an early Stop() that reached the child before exec ran the agent's handler in the child's
  // copy (setting a flag nobody reads) and was lost, so the rank ignored it and got SIGKILL
  // after the grace period.
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &saved);
  const pid_t pid = fork();
  const int fork_errno = errno;
  if (pid != 0) pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    for (int fd : {out[0], out[1], err[0], err[1], exec_report[0], exec_report[1]}) close(fd);
    return ErrnoError("fork for " + spec.argv[0], fork_errno);
  }
  if (pid == 0) {
    // What exec would do, before it: caught signals back to their default action (ignored
    // ones stay ignored), and SIGPIPE to its default as a rank expects.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; ++sig) {
      struct sigaction cur {};
      if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, nullptr, &cur) != 0) continue;
      const bool caught = (cur.sa_flags & SA_SIGINFO) != 0 ||
                          (cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN);
      if (caught || sig == SIGPIPE) sigaction(sig, &dfl, nullptr);
    }
    setpgid(0, 0);
    // A rank must not outlive its agent (kill -9 of the worker): nobody would read its output
    // or report its exit, and it would hold the host's GPUs until it ended on its own.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != agent) _exit(125);  // the agent died before prctl took effect
    dup2(out[1], 1);
    dup2(err[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    if (devnull > 2) close(devnull);
    // Nothing else reaches the rank: a descriptor the worker inherited without close-on-exec
    // (a CI or ssh pipe) would be held open by every rank and its children.
#ifdef SYS_close_range
    syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);
#endif
    auto report = [&](int stage) {
      const int payload[2] = {stage, errno};
      // The parent may have stopped waiting (a slow exec) and closed its end: no SIGPIPE.
      struct sigaction ign {};
      ign.sa_handler = SIG_IGN;
      sigaction(SIGPIPE, &ign, nullptr);
      (void)!write(exec_report[1], payload, sizeof(payload));
    };
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!spec.workdir.empty() && chdir(spec.workdir.c_str()) != 0) {
      report(1);
      _exit(126);
    }
    if (!spec.cpus.empty() && sched_setaffinity(0, sizeof(cpus), &cpus) != 0) {
      const char* msg = "gantry worker: cannot pin the rank to its CPUs; running unpinned\n";
      (void)!write(2, msg, strlen(msg));
    }
    execvpe(image.program(), image.argv(), image.envp());
    report(2);  // the parent names the reason (strerror is not safe here)
    const char* msg = "gantry worker: cannot execute ";
    (void)!write(2, msg, strlen(msg));
    (void)!write(2, image.program(), strlen(image.program()));
    (void)!write(2, "\n", 1);
    _exit(127);
  }
  setpgid(pid, pid);  // also from the parent: no race with an early Stop()
  close(out[1]);
  close(err[1]);
  close(exec_report[1]);
  // Bounded: an exec stuck on a hung mount must not stall the worker's loop (then the
  // launch counts as started, and a late failure shows as exit 127 with its log line).
  int failure[2] = {0, 0};
  ssize_t got = -1;
  pollfd pfd{exec_report[0], POLLIN, 0};
  int ready;
  do {
    ready = poll(&pfd, 1, int(std::max<int64_t>(0, spec.exec_wait.count())));
  } while (ready < 0 && errno == EINTR);
  if (ready > 0) {
    do {
      got = read(exec_report[0], failure, sizeof(failure));
    } while (got < 0 && errno == EINTR);
  }
  close(exec_report[0]);
  if (got == ssize_t(sizeof(failure))) {
    waitpid(pid, nullptr, 0);
    close(out[0]);
    close(err[0]);
    return failure[0] == 1
               ? ErrnoError("cannot change to working directory " + spec.workdir, failure[1])
               : ErrnoError("cannot execute " + spec.argv[0], failure[1]);
  }
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  std::unique_ptr<RankProcess> p(new RankProcess());
  p->pid_ = pid;
  p->out_fd_ = out[0];
  p->err_fd_ = err[0];
  return p;
}

RankProcess::~RankProcess() {
  if (!exited_ && pid_ > 0) {
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
  if (err_fd_ >= 0) close(err_fd_);
}

void RankProcess::Drain(int& fd, std::string& buf, const char* stream,
                        std::vector<OutputLine>& lines, bool final) {
  if (fd < 0) return;
  char chunk[8192];
  // At most kMaxDrainBytes per call: a rank that writes without pause would otherwise keep
  // the agent here, and its heartbeats would stop.
  for (size_t taken = 0; taken < kMaxDrainBytes;) {
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      taken += static_cast<size_t>(n);
      continue;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      close(fd);
      fd = -1;
      final = true;
    }
    break;
  }
  const int64_t now = wire::NowUnixMs();
  size_t start = 0;
  for (;;) {
    size_t nl = buf.find('\n', start);
    if (nl == std::string::npos && buf.size() - start >= kMaxLineBytes) {
      nl = start + kMaxLineBytes;
      // Split between characters: back off over UTF-8 continuation bytes (at most 3).
      for (int k = 0; k < 3 && nl > start + 1 && (static_cast<unsigned char>(buf[nl]) & 0xC0) == 0x80;
           ++k) {
        --nl;
      }
    }
    if (nl == std::string::npos) break;
    // The coordinator's protobuf string fields take UTF-8 only: a stray byte would make it
    // refuse the whole batch of lines.
    lines.push_back({stream, ToValidUtf8(std::string_view(buf).substr(start, nl - start)), now});
    start = nl < buf.size() && buf[nl] == '\n' ? nl + 1 : nl;
  }
  buf.erase(0, start);
  if (final && !buf.empty()) {
    lines.push_back({stream, ToValidUtf8(buf), now});
    buf.clear();
  }
}

void RankProcess::ReadOutput(std::vector<OutputLine>& lines) {
  Drain(out_fd_, out_buf_, "stdout", lines, exited_);
  Drain(err_fd_, err_buf_, "stderr", lines, exited_);
}

bool RankProcess::Poll() {
  if (exited_) return true;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    if (WIFEXITED(status)) {
      exit_code_ = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      signal_ = WTERMSIG(status);
      exit_code_ = 128 + signal_;
    }
    kill(-pid_, SIGKILL);  // stragglers of the group (the rank's own children)
    return true;
  }
  if (stopping_ && std::chrono::steady_clock::now() >= kill_at_) kill(-pid_, SIGKILL);
  return false;
}

std::string RankProcess::exit_description() const {
  if (signal_ != 0) {
    const char* abbrev = sigabbrev_np(signal_);  // "KILL"
    return abbrev ? std::string("killed by SIG") + abbrev
                  : "killed by signal " + std::to_string(signal_);
  }
  return "exit " + std::to_string(exit_code_);
}

void RankProcess::Stop(std::chrono::milliseconds grace) {
  if (exited_ || stopping_) return;
  stopping_ = true;
  kill(-pid_, SIGTERM);
  kill_at_ = std::chrono::steady_clock::now() + grace;
}

}  // namespace gantry::worker
