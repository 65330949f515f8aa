// Resource discovery for the worker agent.
#include "worker/resources.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#if GANTRY_WORKER_HAS_KERNELS
#include "kernels/runtime.h"
#endif
#if GANTRY_WORKER_HAS_VERBS
#include "comm/verbs/verbs_devices.h"
#endif

namespace gantry::worker {

std::string HostName() {
  char buf[256] = {0};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

proto::WorkerResources DetectResources(int cpu_slots, int gpus,
                                       const std::map<std::string, std::string>& labels) {
  proto::WorkerResources r;
  if (cpu_slots <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    cpu_slots = sched_getaffinity(0, sizeof(set), &set) == 0
                    ? CPU_COUNT(&set)
                    : static_cast<int>(std::thread::hardware_concurrency());
  }
  r.set_cpu_slots(cpu_slots);
  if (gpus < 0) {
#if GANTRY_WORKER_HAS_KERNELS
    gpus = kernels::CudaDeviceCount();
#else
    gpus = 0;
#endif
  }
  for (int i = 0; i < gpus; ++i) {
    proto::GpuInfo* g = r.add_gpus();
    g->set_index(i);
    g->set_name("cuda:" + std::to_string(i));
#if GANTRY_WORKER_HAS_KERNELS
    if (auto props = kernels::GetCudaDeviceProperties(i); props.ok()) {
      g->set_name(props->name);
      g->set_memory_bytes(props->memory_bytes);
    }
#endif
  }
#if GANTRY_WORKER_HAS_VERBS
  auto ports = comm::verbs::ListDevices();
  if (ports.ok())
    for (const auto& p : *ports)
      if (p.active()) r.add_rdma_devices(p.device + ":" + std::to_string(p.port));
#endif
  r.mutable_labels()->insert(labels.begin(), labels.end());
  return r;
}

StatusOr<std::string> LocalAddressFor(const std::string& endpoint) {
  if (endpoint.rfind("tcp://", 0) != 0) return std::string("127.0.0.1");
  const size_t colon = endpoint.rfind(':');
  std::string host = endpoint.substr(6, colon - 6);
  const std::string port = endpoint.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
    return InvalidArgumentError("cannot resolve coordinator host '" + host + "' in " + endpoint);
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  std::string out = "127.0.0.1";
  if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t len = sizeof(local);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char buf[INET_ADDRSTRLEN] = {0};
      inet_ntop(AF_INET, &local.sin_addr, buf, sizeof(buf));
      out = buf;
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(res);
  return out;
}

}  // namespace gantry::worker
