// CoordinatorStore: KvSet / KvGet / KvAdd envelopes with the attempt's scope and token.
#include "coordinator/coordinator_store.h"

#include <cstdlib>

namespace gantry::coordinator {

namespace {
constexpr std::chrono::milliseconds kCallTimeout{30000};
constexpr std::chrono::milliseconds kReplyMargin{2000};

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}
}  // namespace

StatusOr<std::shared_ptr<CoordinatorStore>> CoordinatorStore::FromEnv() {
  const std::string endpoint = Env("GANTRY_COORDINATOR"), job = Env("GANTRY_JOB_ID"),
                    attempt = Env("GANTRY_ATTEMPT"), token = Env("GANTRY_TOKEN");
  if (endpoint.empty() || job.empty() || attempt.empty() || token.empty())
    return FailedPreconditionError(
        "not launched by a gantry worker: GANTRY_COORDINATOR, GANTRY_JOB_ID, GANTRY_ATTEMPT "
        "and GANTRY_TOKEN must all be set to use the coordinator's rendezvous");
  wire::ChannelOptions o;
  o.endpoint = endpoint;
  o.timeout = kCallTimeout;
  // A CURVE-secured coordinator: the key files of the worker that launched this rank.
  GANTRY_RETURN_IF_ERROR(
      wire::LoadCurveKeyFiles(Env(wire::kServerKeyEnv), Env(wire::kClientKeyEnv), &o));
  GANTRY_ASSIGN_OR_RETURN(auto channel, wire::Channel::Connect(o));
  return std::make_shared<CoordinatorStore>(o, std::move(channel), job, std::atoi(attempt.c_str()),
                                            token);
}

StatusOr<proto::Envelope> CoordinatorStore::Call(proto::Envelope env,
                                                 std::chrono::milliseconds timeout) {
  env.set_job_id(job_id_);
  env.set_attempt(attempt_);
  env.set_token(token_);
  std::lock_guard<std::mutex> lock(mu_);
  return channel_->Call(std::move(env), timeout);
}

Status CoordinatorStore::Set(const std::string& key, const std::string& value) {
  proto::Envelope env;
  env.mutable_kv_set()->set_key(key);
  env.mutable_kv_set()->set_value(value);
  return Call(std::move(env), kCallTimeout).status();
}

StatusOr<std::string> CoordinatorStore::Get(const std::string& key,
                                            std::chrono::milliseconds timeout) {
  proto::Envelope env;
  env.mutable_kv_get()->set_key(key);
  env.mutable_kv_get()->set_timeout_ms(static_cast<int>(timeout.count()));
  env.set_job_id(job_id_);
  env.set_attempt(attempt_);
  env.set_token(token_);
  GANTRY_ASSIGN_OR_RETURN(auto channel, wire::Channel::Connect(options_));
  GANTRY_ASSIGN_OR_RETURN(auto reply, channel->Call(std::move(env), timeout + kReplyMargin));
  return reply.kv_value().value();
}

StatusOr<int64_t> CoordinatorStore::Add(const std::string& key, int64_t delta) {
  proto::Envelope env;
  env.mutable_kv_add()->set_key(key);
  env.mutable_kv_add()->set_delta(delta);
  GANTRY_ASSIGN_OR_RETURN(auto reply, Call(std::move(env), kCallTimeout));
  return reply.kv_value().number();
}

StatusOr<std::unique_ptr<comm::Bootstrap>> BootstrapFromCoordinator() {
  GANTRY_ASSIGN_OR_RETURN(auto store, CoordinatorStore::FromEnv());
  const std::string rank = Env("RANK"), world = Env("WORLD_SIZE");
  if (rank.empty() || world.empty())
    return FailedPreconditionError("RANK and WORLD_SIZE must be set (the worker sets them)");
  std::string host = Env("GANTRY_ADVERTISE_ADDR");
  if (host.empty()) host = "127.0.0.1";
  return std::make_unique<comm::Bootstrap>(std::atoi(rank.c_str()), std::atoi(world.c_str()),
                                           std::move(store), host);
}

}  // namespace gantry::coordinator
