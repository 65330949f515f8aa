// RingEngine: the poll loop that moves a RingPlan's chunks and reduces them on arrival.
#include "comm/tcp/ring_engine.h"

#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "comm/reduce.h"

namespace gantry::comm {

Status RingEngine::PeerError(const OpLabel& label, int peer, bool receiving, int err,
                             Clock::time_point start) const {
  std::string moved = receiving ? "received " + std::to_string(recv_bytes_) + " of " +
                                      std::to_string(total_recv_) + " bytes from it"
                                : "sent " + std::to_string(sent_bytes_) + " of " +
                                      std::to_string(total_send_) + " bytes to it";
  std::string what = err == 0 ? "closed the connection" : std::string("failed: ") + std::strerror(err);
  return UnavailableError(label.ToString() + ": peer rank " + std::to_string(peer) + " " + what +
                          " after " + SecondsSince(start) + " (" + moved +
                          "); that rank exited, crashed, or stopped on a failure of its own (a "
                          "rank whose operation failed or timed out closes its connections): "
                          "the first failure is in the ranks' logs");
}

Status RingEngine::Run(const RingPlan& plan, std::vector<Socket>& to_next,
                       std::vector<Socket>& from_prev, const RingPeers& peers,
                       const OpLabel& label, Clock::time_point start, Deadline deadline,
                       const std::function<Status()>& on_first_recv) {
  const size_t k_socks = to_next.size(), S = plan.sends.size(), R = plan.recvs.size();
  const size_t es = DataTypeSize(plan.dtype);
  if (staging_.size() < k_socks) staging_.resize(k_socks);
  total_send_ = total_recv_ = sent_bytes_ = recv_bytes_ = 0;
  for (const auto& c : plan.sends) total_send_ += c.bytes;
  for (size_t i = 0; i < R; ++i) {
    total_recv_ += plan.recvs[i].bytes;
    auto& st = staging_[i % k_socks];
    if (plan.recvs[i].reduce_with && st.size() < plan.recvs[i].bytes) st.resize(plan.recvs[i].bytes);
  }
  done_.assign(R, 0);
  send_done_.assign(S, 0);
  send_cur_.assign(k_socks, {0, 0});
  recv_cur_.assign(k_socks, {0, 0});
  for (size_t k = 0; k < k_socks; ++k) send_cur_[k].index = recv_cur_[k].index = k;
  size_t sends_left = S, recvs_left = R;
  std::vector<pollfd> fds;
  // A poll() sleep costs a 5-20 us wake-up; a peer's next chunk usually arrives sooner. So
  // retry the non-blocking calls for up to kSpin after the last progress before sleeping.
  Clock::time_point last_progress = Clock::now();
  while (sends_left > 0 || recvs_left > 0) {
    bool progress = false;
    fds.clear();
    for (size_t k = 0; k < k_socks; ++k) {
      // Sends on socket k: as far as dependencies and the socket buffer allow.
      for (Cursor& cur = send_cur_[k]; cur.index < S;) {
        const SendChunk& c = plan.sends[cur.index];
        if (c.dep >= 0 && !done_[c.dep]) break;
        if (cur.offset < c.bytes) {
          // A small send followed by ready, non-empty data for this socket (the op header +
          // first chunk): MSG_MORE lets the kernel coalesce them into one segment. The next
          // send is then attempted at once and ends the chain (an empty one would not, and
          // the corked bytes would wait ~200 ms for the kernel's cork timer).
          const size_t nx = cur.index + k_socks;
          const bool more = c.bytes <= 4096 && nx < S && plan.sends[nx].bytes > 0 &&
                            (plan.sends[nx].dep < 0 || done_[plan.sends[nx].dep]);
          ssize_t n = ::send(to_next[k].fd(), c.src + cur.offset, c.bytes - cur.offset,
                             MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0));
          if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
              return PeerError(label, peers.next, false, errno == EPIPE ? 0 : errno, start);
            }
            fds.push_back({to_next[k].fd(), POLLOUT, 0});
            break;
          }
          cur.offset += static_cast<size_t>(n);
          sent_bytes_ += static_cast<size_t>(n);
          progress = true;
          if (cur.offset < c.bytes) continue;
        }
        send_done_[cur.index] = 1;
        cur.index += k_socks;
        cur.offset = 0;
        --sends_left;
      }
      // Receives on socket k, reducing each chunk as soon as it is complete.
      for (Cursor& cur = recv_cur_[k]; cur.index < R;) {
        const RecvChunk& c = plan.recvs[cur.index];
        if (cur.offset < c.bytes) {
          char* dst = (c.reduce_with ? staging_[k].data() : c.dst) + cur.offset;
          ssize_t n = ::recv(from_prev[k].fd(), dst, c.bytes - cur.offset, MSG_DONTWAIT);
          if (n == 0) return PeerError(label, peers.prev, true, 0, start);
          if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
              return PeerError(label, peers.prev, true, errno == ECONNRESET ? 0 : errno, start);
            }
            fds.push_back({from_prev[k].fd(), POLLIN, 0});
            break;
          }
          cur.offset += static_cast<size_t>(n);
          recv_bytes_ += static_cast<size_t>(n);
          progress = true;
          if (cur.offset < c.bytes) continue;
        }
        // Held in staging until the send that still reads dst is through (the wake-up comes
        // from that send's POLLOUT).
        if (c.after_send >= 0 && !send_done_[c.after_send]) break;
        if (c.reduce_with) {
          const char* data = staging_[k].data();
          if (c.received_first) {
            ReduceInto(c.dst, data, c.reduce_with, c.bytes / es, plan.dtype, plan.op);
          } else {
            ReduceInto(c.dst, c.reduce_with, data, c.bytes / es, plan.dtype, plan.op);
          }
          if (c.finish_average) FinishAverage(c.dst, c.bytes / es, plan.dtype, plan.world);
        }
        done_[cur.index] = 1;
        if (cur.index == 0 && on_first_recv) GANTRY_RETURN_IF_ERROR(on_first_recv());
        cur.index += k_socks;
        cur.offset = 0;
        --recvs_left;
        progress = true;
      }
    }
    if (progress || (sends_left == 0 && recvs_left == 0)) {
      last_progress = Clock::now();
      continue;
    }
    if (fds.empty()) {
      return InternalError(label.ToString() + ": ring plan stalled (dependency cycle)");
    }
    if (Clock::now() - last_progress < kSpin) {
      sched_yield();  // a peer rank or our caller may need this core (oversubscribed hosts)
      continue;
    }
    int rc = ::poll(fds.data(), fds.size(), MillisLeft(deadline));
    if (rc < 0 && errno != EINTR) return ErrnoError(label.ToString() + ": poll", errno);
    if (rc == 0) {
      bool waiting_recv = false;
      for (const auto& p : fds) waiting_recv |= (p.events & POLLIN) != 0;
      int peer = waiting_recv ? peers.prev : peers.next;
      return DeadlineExceededError(
          label.ToString() + ": timed out after " + SecondsSince(start) + " waiting for peer rank " +
          std::to_string(peer) + (waiting_recv ? " to send" : " to read") + " (received " +
          std::to_string(recv_bytes_) + " of " + std::to_string(total_recv_) + " bytes, sent " +
          std::to_string(sent_bytes_) + " of " + std::to_string(total_send_) +
          "); that rank is stuck or slow: check it, or raise comm timeout_s");
    }
  }
  return OkStatus();
}

}  // namespace gantry::comm
