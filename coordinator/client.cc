// CoordinatorClient: one request envelope per call.
#include "coordinator/client.h"

#include <cstdlib>
#include <fstream>

#include "proto/wire.h"

namespace gantry::coordinator {

std::string ResolveCoordinatorEndpoint(const std::string& flag, const std::string& dir) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("GANTRY_COORDINATOR"); env && *env) return env;
  std::ifstream in(dir + "/coordinator");
  std::string line;
  if (in && std::getline(in, line) && !line.empty()) return line;
  return "tcp://127.0.0.1:" + std::to_string(wire::kDefaultCoordinatorPort);
}

StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(
    const wire::ChannelOptions& options) {
  GANTRY_ASSIGN_OR_RETURN(auto ch, wire::Channel::Connect(options));
  return std::unique_ptr<CoordinatorClient>(new CoordinatorClient(std::move(ch)));
}

StatusOr<std::string> CoordinatorClient::Submit(const std::string& spec_yaml,
                                                const std::string& source_name,
                                                const std::string& workdir) {
  proto::Envelope req;
  req.mutable_submit_job()->set_spec_yaml(spec_yaml);
  req.mutable_submit_job()->set_source_name(source_name);
  req.mutable_submit_job()->set_workdir(workdir);
  GANTRY_ASSIGN_OR_RETURN(auto reply, channel_->Call(std::move(req)));
  return reply.submit_job_reply().job_id();
}

StatusOr<proto::JobInfo> CoordinatorClient::GetJob(const std::string& job_id, bool describe) {
  proto::Envelope req;
  req.mutable_get_job()->set_job_id(job_id);
  req.mutable_get_job()->set_describe(describe);
  GANTRY_ASSIGN_OR_RETURN(auto reply, channel_->Call(std::move(req)));
  return reply.job_info();
}

StatusOr<proto::JobList> CoordinatorClient::ListJobs(bool all, int limit) {
  proto::Envelope req;
  req.mutable_list_jobs()->set_all(all);
  req.mutable_list_jobs()->set_limit(limit);
  GANTRY_ASSIGN_OR_RETURN(auto reply, channel_->Call(std::move(req)));
  return reply.job_list();
}

Status CoordinatorClient::Cancel(const std::string& job_id) {
  proto::Envelope req;
  req.mutable_cancel_job()->set_job_id(job_id);
  GANTRY_ASSIGN_OR_RETURN(auto reply, channel_->Call(std::move(req)));
  return OkStatus();
}

StatusOr<proto::LogBatch> CoordinatorClient::Logs(const std::string& job_id, int rank,
                                                  uint64_t after_seq, int max_records) {
  proto::Envelope req;
  req.mutable_get_logs()->set_job_id(job_id);
  req.mutable_get_logs()->set_rank(rank);
  req.mutable_get_logs()->set_after_seq(after_seq);
  req.mutable_get_logs()->set_max_records(max_records);
  GANTRY_ASSIGN_OR_RETURN(auto reply, channel_->Call(std::move(req)));
  return reply.log_batch();
}

StatusOr<proto::WorkerList> CoordinatorClient::Workers() {
  proto::Envelope req;
  req.mutable_list_workers();
  GANTRY_ASSIGN_OR_RETURN(auto reply, channel_->Call(std::move(req)));
  return reply.worker_list();
}

}  // namespace gantry::coordinator
