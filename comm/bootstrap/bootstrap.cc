// Bootstrap: scopes, all-gather over the store, and the torchrun-style env bootstrap.
#include "comm/bootstrap/bootstrap.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>

#include "base/logging.h"
#include "comm/bootstrap/mpi_bootstrap.h"
#include "comm/bootstrap/tcp_store.h"

namespace gantry::comm {

Bootstrap::Bootstrap(int rank, int size, std::shared_ptr<Store> store, std::string advertise_host,
                     std::shared_ptr<void> keepalive)
    : rank_(rank), size_(size), store_(std::move(store)),
      advertise_host_(std::move(advertise_host)), keepalive_(std::move(keepalive)) {}

std::string Bootstrap::HostId() {
  if (const char* id = std::getenv("GANTRY_HOST_ID"); id && *id) return id;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::string boot;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::getline(f, boot);
  return std::string(host) + "/" + boot;
}

std::shared_ptr<Store> Bootstrap::NewScope(const std::string& what) {
  return std::make_shared<PrefixStore>(what + "." + std::to_string(scopes_++), store_);
}

StatusOr<std::vector<std::string>> Bootstrap::AllGather(Store& scope, const std::string& name,
                                                        const std::string& blob,
                                                        std::chrono::milliseconds timeout) {
  GANTRY_RETURN_IF_ERROR(scope.Set(name + "/" + std::to_string(rank_), blob));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Rank r's value of `key` within the deadline; `missing` says what it failed to do.
  auto get = [&](const std::string& key, int r, const char* missing) -> StatusOr<std::string> {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    auto v = scope.Get(key + "/" + std::to_string(r), std::max(left, std::chrono::milliseconds(0)));
    if (!v.ok()) {
      // Only a timeout is this rank's fault; anything else (the job failed, the store closed)
      // says why in its own words.
      Status s = v.status();
      return s.Prepend("bootstrap all-gather '" + name + "': " +
                       (s.code() == StatusCode::kDeadlineExceeded
                            ? "rank " + std::to_string(r) + " " + missing
                            : "while waiting for rank " + std::to_string(r)));
    }
    return v;
  };
  std::vector<std::string> out(size_);
  for (int r = 0; r < size_; ++r) {
    GANTRY_ASSIGN_OR_RETURN(out[r], get(name, r, "did not publish"));
  }
  // Rank 0 hosts the TCP store: it leaves only once every other rank has read every part. A
  // rank 0 that stopped right after (e.g. on settings that differ) closed the store under a
  // rank still reading, which then blamed rank 0 for never publishing. Only rank 0 waits on
  // the marks, and it may leave as soon as it sees them (possibly before the store answered
  // the Set): a failure to set one is not this rank's problem.
  if (rank_ != 0) {
    if (Status mark = scope.Set(name + "/read/" + std::to_string(rank_), ""); !mark.ok()) {
      GANTRY_LOG(DEBUG, "bootstrap: read mark not stored")
          .Field("all_gather", name)
          .Field("error", mark);
    }
    return out;
  }
  for (int r = 1; r < size_; ++r) {
    GANTRY_RETURN_IF_ERROR(
        get(name + "/read", r, "did not confirm it read every rank's part").status());
  }
  return out;
}

Status Bootstrap::AgreeOn(const std::string& what, const SharedSettings& settings,
                          std::chrono::milliseconds timeout) {
  if (size_ == 1) return OkStatus();
  auto scope = NewScope("agree");
  GANTRY_ASSIGN_OR_RETURN(auto blobs,
                          AllGather(*scope, "settings", EncodeSettings(settings), timeout));
  return CompareSettings(what, blobs);
}

std::unique_ptr<Bootstrap> Bootstrap::Sub(const std::string& name, int new_rank, int new_size) {
  return std::make_unique<Bootstrap>(new_rank, new_size, NewScope("sub." + name), advertise_host_,
                                     keepalive_);
}

namespace {

StatusOr<int> EnvInt(const char* name, int min_value) {
  const char* v = std::getenv(name);
  if (!v || !*v) return NotFoundError(std::string(name) + " is not set");
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < min_value || x > 1'000'000) {
    return InvalidArgumentError(std::string(name) + "='" + v + "' is not an integer >= " +
                                std::to_string(min_value));
  }
  return static_cast<int>(x);
}

bool EnvTrue(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return false;
  std::string s = v;
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s == "true" || s == "1";
}

// MASTER_ADDR as the socket layer takes it: an IPv6 literal may come bracketed ("[::1]").
StatusOr<std::string> MasterHost(std::string addr) {
  if (!addr.empty() && addr.front() == '[') {
    const size_t close = addr.find(']');
    if (close == std::string::npos || close + 1 != addr.size()) {
      return InvalidArgumentError("bootstrap: MASTER_ADDR=" + addr + " is not a host (an IPv6 "
                                  "address goes bare or in brackets, the port in MASTER_PORT)");
    }
    return addr.substr(1, close - 1);
  }
  if (std::count(addr.begin(), addr.end(), ':') == 1) {
    return InvalidArgumentError("bootstrap: MASTER_ADDR=" + addr + " looks like host:port; "
                                "MASTER_ADDR is the host alone, the port goes in MASTER_PORT");
  }
  return addr;
}

// The port of Gantry's TCP store, the same on every rank: GANTRY_STORE_PORT when set; else
// MASTER_PORT, or MASTER_PORT+1 under torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE:
// torchrun's agent already serves its own store on MASTER_PORT).
StatusOr<int> StorePort(int master_port) {
  auto explicit_port = EnvInt("GANTRY_STORE_PORT", 1);
  if (explicit_port.ok() && *explicit_port <= 65535) {
    if (*explicit_port != master_port) {
      GANTRY_LOG(INFO, "TCP store on GANTRY_STORE_PORT")
          .Field("port", int64_t(*explicit_port))
          .Field("master_port", int64_t(master_port));
    }
    return *explicit_port;
  }
  if (explicit_port.status().code() != StatusCode::kNotFound) {
    return InvalidArgumentError("bootstrap: GANTRY_STORE_PORT='" +
                                std::string(std::getenv("GANTRY_STORE_PORT")) +
                                "' is not a port (1..65535)");
  }
  if (!EnvTrue("TORCHELASTIC_USE_AGENT_STORE")) return master_port;
  if (master_port == 65535) {
    return InvalidArgumentError("bootstrap: torchrun's agent store holds MASTER_PORT=65535 and "
                                "Gantry's store would use MASTER_PORT+1; set GANTRY_STORE_PORT "
                                "(the same on every rank) or a lower MASTER_PORT");
  }
  GANTRY_LOG(INFO, "TCP store on MASTER_PORT+1: torchrun's agent store holds MASTER_PORT "
                   "(TORCHELASTIC_USE_AGENT_STORE); set GANTRY_STORE_PORT to choose another")
      .Field("port", int64_t(master_port + 1))
      .Field("master_port", int64_t(master_port));
  return master_port + 1;
}

}  // namespace

StatusOr<std::unique_ptr<Bootstrap>> BootstrapFromEnv(std::chrono::milliseconds timeout) {
  // RANK wins; a Kubernetes Indexed Job gives only JOB_COMPLETION_INDEX. A malformed value is
  // an error naming it, never a silent fall-back to the other variable.
  auto rank = EnvInt("RANK", 0);
  if (rank.status().code() == StatusCode::kNotFound) rank = EnvInt("JOB_COMPLETION_INDEX", 0);
  if (rank.status().code() == StatusCode::kInvalidArgument) {
    Status bad = rank.status();
    return bad.Prepend("bootstrap");
  }
  if (!rank.ok()) {
    return InvalidArgumentError("bootstrap: set RANK (or JOB_COMPLETION_INDEX) and WORLD_SIZE, "
                                "MASTER_ADDR, MASTER_PORT as torchrun does");
  }
  auto size = EnvInt("WORLD_SIZE", 1);
  if (!size.ok()) return size.status();
  if (*rank >= *size) {
    return InvalidArgumentError("bootstrap: RANK=" + std::to_string(*rank) +
                                " is not below WORLD_SIZE=" + std::to_string(*size));
  }
  const char* addr = std::getenv("MASTER_ADDR");
  auto port = EnvInt("MASTER_PORT", 1);
  if (!addr || !*addr || !port.ok() || *port > 65535) {
    return InvalidArgumentError("bootstrap: MASTER_ADDR and MASTER_PORT (1..65535) must name rank "
                                "0's TCP store, e.g. MASTER_ADDR=127.0.0.1 MASTER_PORT=29500");
  }
  GANTRY_ASSIGN_OR_RETURN(const std::string host, MasterHost(addr));
  GANTRY_ASSIGN_OR_RETURN(const int store_port, StorePort(*port));
  const TcpStoreIdentity me{*rank, *size, JobIdentityFromEnv()};
  std::shared_ptr<TcpStoreServer> server;
  if (*rank == 0) {
    // All interfaces, IPv4 and IPv6: MASTER_ADDR may name this host either way. One connection
    // per rank stays open for the job: the cap leaves room above the world.
    auto s = TcpStoreServer::Start("", store_port,
                                   {.world_size = *size,
                                    .job = me.job,
                                    .max_clients = std::max(1024, *size + 64)});
    if (!s.ok()) {
      Status st = s.status();
      return st.Prepend("bootstrap: rank 0 cannot host the TCP store on port " +
                        std::to_string(store_port));
    }
    server = std::move(s).value();
  }
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<TcpStore> client,
                          TcpStore::Connect(host, store_port, timeout));
  // Checks that the port speaks this protocol, that WORLD_SIZE agrees with rank 0's and that no
  // other process holds this rank; this rank's death then fails the others' waits.
  GANTRY_RETURN_IF_ERROR(client->Identify(me, timeout));
  std::string local = client->LocalHost();
  return std::make_unique<Bootstrap>(*rank, *size, std::shared_ptr<Store>(std::move(client)), local,
                                     server);
}

StatusOr<std::unique_ptr<Bootstrap>> BootstrapFromEnvironment(std::chrono::milliseconds timeout) {
  const char* rank = std::getenv("RANK");
  const char* index = std::getenv("JOB_COMPLETION_INDEX");
  if ((rank && *rank) || (index && *index)) return BootstrapFromEnv(timeout);
  if (RunningUnderMpirun()) return BootstrapFromMpi(timeout);
  return std::make_unique<Bootstrap>(0, 1, std::make_shared<MemoryStore>());
}

}  // namespace gantry::comm
