// PeerProcess: fork/exec with two pipes, poll()-bounded line reads, stop by PID.
#include "bench/train_bench/peer_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "base/exec_image.h"


namespace gantry::bench {

using Clock = std::chrono::steady_clock;

Status PeerProcess::Start(const std::vector<std::string>& argv,
                          const std::map<std::string, std::string>& env) {
  if (argv.empty()) return InvalidArgumentError("PeerProcess::Start: empty argv");
  if (pid_ > 0) return FailedPreconditionError("PeerProcess::Start: already running");
  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe for peer stdin", errno);
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(in_pipe[0]);
    close(in_pipe[1]);
    return ErrnoError("pipe for peer stdout", errno);
  }
  const ExecImage image(argv, env);  // built before fork: the child only reads it
  std::string exec_error = "{\"error\": \"cannot execute ";
  for (char ch : argv[0]) {
    if (ch == '"' || ch == '\\') exec_error += '\\';
    exec_error += ch;
  }
  exec_error += " (errno ";
  const pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) close(fd);
    return ErrnoError("fork for peer " + argv[0], errno);
  }
  if (pid == 0) {  // child
    dup2(in_pipe[0], STDIN_FILENO);
    dup2(out_pipe[1], STDOUT_FILENO);
    execve(image.program(), image.argv(), image.envp());
    char code[24];  // errno in decimal, without snprintf (not async-signal-safe)
    int len = 0;
    for (int e = errno; len == 0 || e > 0; e /= 10) code[len++] = char('0' + e % 10);
    (void)!write(STDOUT_FILENO, exec_error.data(), exec_error.size());
    while (len > 0) (void)!write(STDOUT_FILENO, &code[--len], 1);
    (void)!write(STDOUT_FILENO, ")\"}\n", 4);
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  pid_ = pid;
  to_child_ = in_pipe[1];
  from_child_ = out_pipe[0];
  buffer_.clear();
  return OkStatus();
}

Status PeerProcess::Send(const std::string& line) {
  if (pid_ <= 0) return FailedPreconditionError("PeerProcess::Send: peer not running");
  const std::string data = line + "\n";
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(to_child_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("writing to peer pid " + std::to_string(pid_), errno);
    done += size_t(n);
  }
  return OkStatus();
}

StatusOr<std::string> PeerProcess::ReadLine(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return FailedPreconditionError("PeerProcess::ReadLine: peer not running");
  const Clock::time_point deadline = Clock::now() + timeout;
  while (true) {
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return DeadlineExceededError("peer pid " + std::to_string(pid_) + " sent no reply within " +
                                   std::to_string(timeout.count()) + " ms");
    }
    pollfd p{from_child_, POLLIN, 0};
    const int r = poll(&p, 1, int(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoError("poll on peer stdout", errno);
    if (r == 0) continue;
    char chunk[4096];
    const ssize_t n = read(from_child_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("reading peer stdout", errno);
    if (n == 0) return UnavailableError("peer closed its output: " + ExitDescription());
    buffer_.append(chunk, size_t(n));
  }
}

std::string PeerProcess::ExitDescription() {
  int status = 0;
  for (int i = 0; i < 50; ++i) {  // up to 0.5 s for the exit to be reapable
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
      if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
      return "ended";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "still running";
}

void PeerProcess::Stop(std::chrono::milliseconds grace) {
  if (to_child_ >= 0) close(to_child_);
  to_child_ = -1;
  if (pid_ > 0) {
    const Clock::time_point deadline = Clock::now() + grace;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() >= deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }
  if (from_child_ >= 0) close(from_child_);
  from_child_ = -1;
}

}  // namespace gantry::bench
