// Bootstrap: who am I (rank, world size), a Store shared by all ranks, and the address peers
// should use to reach this host. Sources, in the order BootstrapFromEnvironment tries them:
//   1. torchrun / Kubernetes env: RANK (or JOB_COMPLETION_INDEX), WORLD_SIZE, MASTER_ADDR,
//      MASTER_PORT; rank 0 hosts a TcpStoreServer on the store port, every rank is its client;
//   2. mpirun (OMPI_COMM_WORLD_SIZE set, built with MPI): see comm/bootstrap/mpi_bootstrap.h;
//   3. nothing set: a single rank with an in-process store.
// The coordinator's KV plugs in by implementing Store and constructing a Bootstrap with it.
// Thread-compatible: one thread uses a Bootstrap at a time.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/settings_agreement.h"
#include "comm/bootstrap/store.h"

namespace gantry::comm {

class Bootstrap {
 public:
  // `keepalive` owns whatever must outlive the store's users (rank 0's TcpStoreServer).
  Bootstrap(int rank, int size, std::shared_ptr<Store> store,
            std::string advertise_host = "127.0.0.1", std::shared_ptr<void> keepalive = nullptr);

  int rank() const { return rank_; }
  int size() const { return size_; }
  Store& store() { return *store_; }
  std::shared_ptr<Store> shared_store() { return store_; }
  // Address (IP) other ranks should use to connect to this rank.
  const std::string& advertise_host() const { return advertise_host_; }
  // Host identity: GANTRY_HOST_ID, else hostname + kernel boot id (ranks on one machine agree).
  static std::string HostId();

  // A fresh key namespace for one communicator or exchange; every rank must call NewScope in
  // the same order so that they agree on the name.
  std::shared_ptr<Store> NewScope(const std::string& what);
  // Each rank contributes `blob`; returns all ranks' blobs in rank order.
  StatusOr<std::vector<std::string>> AllGather(Store& scope, const std::string& name,
                                               const std::string& blob,
                                               std::chrono::milliseconds timeout);
  // Every rank passes the settings it must share with the others (the same names on every
  // rank); kFailedPrecondition on every rank naming the first that differs
  // (base/settings_agreement.h). One all-gather in a new scope; nothing with one rank.
  Status AgreeOn(const std::string& what, const SharedSettings& settings,
                 std::chrono::milliseconds timeout);
  // A bootstrap for a subgroup (new_rank/new_size inside it) in its own namespace.
  std::unique_ptr<Bootstrap> Sub(const std::string& name, int new_rank, int new_size);

 private:
  int rank_;
  int size_;
  std::shared_ptr<Store> store_;
  std::string advertise_host_;
  std::shared_ptr<void> keepalive_;
  int scopes_ = 0;
};

// From torchrun-style environment variables (see above); kInvalidArgument names the bad
// variable. MASTER_ADDR is a name, an IPv4 or an IPv6 address (bare or in brackets). The store
// port is GANTRY_STORE_PORT when set, else MASTER_PORT, or MASTER_PORT+1 when
// TORCHELASTIC_USE_AGENT_STORE is true (torchrun's agent holds MASTER_PORT); rank 0 binds it on
// all interfaces, IPv4 and IPv6. kFailedPrecondition when the ranks disagree on WORLD_SIZE, two
// processes claim one rank, or the port does not speak Gantry's store protocol.
StatusOr<std::unique_ptr<Bootstrap>> BootstrapFromEnv(std::chrono::milliseconds timeout);
// Env if RANK/WORLD_SIZE are set, else MPI when under mpirun, else a single rank.
StatusOr<std::unique_ptr<Bootstrap>> BootstrapFromEnvironment(std::chrono::milliseconds timeout);

}  // namespace gantry::comm
