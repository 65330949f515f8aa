// CoordinatorStore: the comm bootstrap Store served by the coordinator's rendezvous KV, for
// ranks the coordinator launched. Keys are scoped to (job, attempt) and every call carries
// the per-attempt token (GANTRY_JOB_ID, GANTRY_ATTEMPT, GANTRY_TOKEN, GANTRY_COORDINATOR set by
// the worker). Thread-safe: Set/Add share one DEALER channel under a mutex; each Get (which
// may wait up to its timeout) uses its own short-lived channel so it never blocks a Set.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "comm/bootstrap/bootstrap.h"
#include "comm/bootstrap/store.h"
#include "proto/channel.h"

namespace gantry::coordinator {

class CoordinatorStore : public comm::Store {
 public:
  // From the environment a worker gives its ranks; kFailedPrecondition names what is missing.
  static StatusOr<std::shared_ptr<CoordinatorStore>> FromEnv();
  CoordinatorStore(wire::ChannelOptions options, std::unique_ptr<wire::Channel> channel,
                   std::string job_id, int attempt, std::string token)
      : options_(std::move(options)),
        channel_(std::move(channel)),
        job_id_(std::move(job_id)),
        attempt_(attempt),
        token_(std::move(token)) {}

  Status Set(const std::string& key, const std::string& value) override;
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;
  StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;

 private:
  StatusOr<proto::Envelope> Call(proto::Envelope env, std::chrono::milliseconds timeout);
  wire::ChannelOptions options_;
  std::mutex mu_;
  std::unique_ptr<wire::Channel> channel_;
  std::string job_id_;
  int attempt_;
  std::string token_;
};

// A Bootstrap over the coordinator's KV when GANTRY_TOKEN and friends are set (ranks launched
// by a gantry worker); RANK/WORLD_SIZE give the rank and size.
StatusOr<std::unique_ptr<comm::Bootstrap>> BootstrapFromCoordinator();

}  // namespace gantry::coordinator
