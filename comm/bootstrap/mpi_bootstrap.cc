// MPI bootstrap: MPI for rank/size and to publish rank 0's TCP store address.
#include "comm/bootstrap/mpi_bootstrap.h"

#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "comm/bootstrap/tcp_store.h"
#include "gantry_config.h"
#if GANTRY_COMM_WITH_MPI
#include <mpi.h>
#endif

namespace gantry::comm {

bool RunningUnderMpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    const char* s = std::getenv(v);
    if (s && *s) return true;
  }
  return false;
}

#if GANTRY_COMM_WITH_MPI
namespace {

std::atomic<bool> g_mpi_failed{false};

// Candidate addresses of this host for peers: loopback first (same host), then every IPv4.
std::string LocalAddresses() {
  std::string out = "127.0.0.1";
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return out;
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char host[NI_MAXHOST];
    if (getnameinfo(i->ifa_addr, sizeof(sockaddr_in), host, sizeof(host), nullptr, 0,
                    NI_NUMERICHOST) == 0 && std::strcmp(host, "127.0.0.1") != 0) {
      out += " ";
      out += host;
    }
  }
  freeifaddrs(ifs);
  return out;
}

}  // namespace

Status EnsureMpiInitialized() {
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) return OkStatus();
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
    return UnavailableError("MPI_Init_thread failed; run under mpirun or unset OMPI_* variables");
  }
  std::atexit([] {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && !g_mpi_failed.load()) MPI_Finalize();
  });
  return OkStatus();
}

void MarkMpiFailed() { g_mpi_failed.store(true); }

Status WaitMpi(const std::function<int(int* flag)>& test, std::chrono::milliseconds timeout,
               const std::string& what) {
  const auto start = std::chrono::steady_clock::now();
  for (int spins = 0;; ++spins) {
    int flag = 0;
    if (const int rc = test(&flag); rc != MPI_SUCCESS) {
      MarkMpiFailed();
      return InternalError(what + ": MPI_Test failed with code " + std::to_string(rc));
    }
    if (flag) return OkStatus();
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited >= timeout) {
      MarkMpiFailed();
      return DeadlineExceededError(
          what + ": not complete after " +
          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()) +
          " ms; a rank is stuck or dead (MPI cannot say which): check every rank's log");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(spins < 100 ? 10 : 1000));
  }
}

StatusOr<std::unique_ptr<Bootstrap>> BootstrapFromMpi(std::chrono::milliseconds timeout) {
  GANTRY_RETURN_IF_ERROR(EnsureMpiInitialized());
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::shared_ptr<TcpStoreServer> server;
  char info[1024] = {0};
  Status server_status;
  if (rank == 0) {
    auto started = TcpStoreServer::Start("", 0,
                                         {.world_size = size,
                                          .job = JobIdentityFromEnv(),
                                          .max_clients = std::max(1024, size + 64)});
    if (started.ok()) {
      server = std::move(started).value();
      char host[256] = {0};
      gethostname(host, sizeof(host) - 1);
      std::snprintf(info, sizeof(info), "%d %s %s", server->port(), host,
                    LocalAddresses().c_str());
    } else {
      // Still broadcast, so the other ranks fail now with the reason instead of waiting.
      server_status = started.status();
      std::snprintf(info, sizeof(info), "0 - %s", server_status.ToString().c_str());
    }
  }
  MPI_Request req;
  if (const int rc = MPI_Ibcast(info, sizeof(info), MPI_CHAR, 0, MPI_COMM_WORLD, &req);
      rc != MPI_SUCCESS) {
    MarkMpiFailed();
    return InternalError("MPI bootstrap: MPI_Ibcast failed with code " + std::to_string(rc));
  }
  GANTRY_RETURN_IF_ERROR(
      WaitMpi([&](int* flag) { return MPI_Test(&req, flag, MPI_STATUS_IGNORE); }, timeout,
              "MPI bootstrap: broadcast of rank 0's TCP store address (rank " +
                  std::to_string(rank) + " of " + std::to_string(size) + ")"));
  info[sizeof(info) - 1] = 0;
  if (!server_status.ok()) {
    MarkMpiFailed();
    return server_status.Prepend("MPI bootstrap: rank 0 cannot start its TCP store");
  }
  std::istringstream in(info);
  int port = 0;
  std::string root_host, addr;
  in >> port >> root_host;
  if (port <= 0) {
    MarkMpiFailed();
    return UnavailableError("MPI bootstrap: rank 0 cannot start its TCP store: " +
                            std::string(info).substr(std::min<size_t>(4, std::strlen(info))));
  }
  char my_host[256] = {0};
  gethostname(my_host, sizeof(my_host) - 1);
  Status last = UnavailableError("rank 0 published no address");
  while (in >> addr) {
    if (addr == "127.0.0.1" && root_host != my_host) continue;  // another host's loopback
    auto client = TcpStore::Connect(addr, port, std::min(timeout, std::chrono::milliseconds(5000)));
    if (!client.ok()) {
      last = client.status();
      continue;
    }
    if (Status st = (*client)->Identify({rank, size, JobIdentityFromEnv()}, timeout); !st.ok()) {
      last = st;
      continue;
    }
    std::string local = (*client)->LocalHost();
    return std::make_unique<Bootstrap>(rank, size, std::shared_ptr<Store>(std::move(client).value()),
                                       local, server);
  }
  MarkMpiFailed();
  return last.Prepend("MPI bootstrap: cannot reach rank 0's TCP store (tried: " +
                      std::string(info) + ")");
}

#else

Status EnsureMpiInitialized() {
  return UnimplementedError("built without MPI (GANTRY_WITH_MPI=OFF or Open MPI not found)");
}

void MarkMpiFailed() {}

Status WaitMpi(const std::function<int(int*)>&, std::chrono::milliseconds, const std::string& what) {
  return UnimplementedError(what + ": built without MPI");
}

StatusOr<std::unique_ptr<Bootstrap>> BootstrapFromMpi(std::chrono::milliseconds) {
  return UnimplementedError("MPI bootstrap: this build has no MPI; rebuild with libopenmpi-dev "
                            "installed, or set RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT");
}

#endif

}  // namespace gantry::comm
