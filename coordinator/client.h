// CoordinatorClient: typed calls to the coordinator for the CLI and tests (submit, query,
// cancel, logs, workers) over a wire::Channel. Not thread-safe (one owner thread).
// Endpoint resolution for commands: --coordinator flag, else $GANTRY_COORDINATOR, else the
// file <dir>/coordinator written by `gantry up`, else tcp://127.0.0.1:7450.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "proto/channel.h"
#include "proto/gantry.pb.h"

namespace gantry::coordinator {

std::string ResolveCoordinatorEndpoint(const std::string& flag, const std::string& dir = ".gantry");

class CoordinatorClient {
 public:
  static StatusOr<std::unique_ptr<CoordinatorClient>> Connect(const wire::ChannelOptions& options);

  StatusOr<std::string> Submit(const std::string& spec_yaml, const std::string& source_name,
                               const std::string& workdir);
  StatusOr<proto::JobInfo> GetJob(const std::string& job_id, bool describe = false);
  StatusOr<proto::JobList> ListJobs(bool all, int limit = 0);
  Status Cancel(const std::string& job_id);
  StatusOr<proto::LogBatch> Logs(const std::string& job_id, int rank, uint64_t after_seq,
                                 int max_records = 1000);
  StatusOr<proto::WorkerList> Workers();
  wire::Channel& channel() { return *channel_; }

 private:
  explicit CoordinatorClient(std::unique_ptr<wire::Channel> c) : channel_(std::move(c)) {}
  std::unique_ptr<wire::Channel> channel_;
};

}  // namespace gantry::coordinator
