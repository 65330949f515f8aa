// `gantry info [-o text|json]`: version, build features, CPU, memory, CUDA devices, RDMA.
// What a bug report or a scheduler needs to know about this host and this binary.
#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "comm/verbs/verbs_devices.h"
#include "base/tunables.h"
#include "cli/command.h"
#include "gantry_config.h"

#if GANTRY_CLI_HAS_KERNELS
#include "kernels/runtime.h"
#endif

namespace gantry::cli {
namespace {

// First value of "key : value" lines in a /proc file, or "".
std::string ProcField(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    size_t b = v.find_first_not_of(" \t");
    return b == std::string::npos ? "" : v.substr(b);
  }
  return "";
}

int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return int(std::thread::hardware_concurrency());
  return CPU_COUNT(&set);
}

nlohmann::json CollectInfo() {
  nlohmann::json j;
  j["version"] = GANTRY_VERSION;
  j["features"] = {{"cuda", bool(GANTRY_WITH_CUDA)}, {"nccl", bool(GANTRY_WITH_NCCL)},
                   {"mpi", bool(GANTRY_WITH_MPI)},   {"ceph", bool(GANTRY_WITH_CEPH)},
                   {"verbs", bool(GANTRY_WITH_VERBS)}, {"onednn", bool(GANTRY_WITH_DNNL)}};
  utsname u{};
  if (uname(&u) == 0) {
    j["host"] = {{"name", u.nodename}, {"kernel", std::string(u.sysname) + " " + u.release},
                 {"arch", u.machine}};
  }
  std::string kb = ProcField("/proc/meminfo", "MemTotal");  // "24576000 kB"
  int64_t mem_bytes = kb.empty() ? 0 : std::stoll(kb) * 1024;
  j["cpu"] = {{"model", ProcField("/proc/cpuinfo", "model name")},
              {"logical_cpus", int(std::thread::hardware_concurrency())},
              {"usable_cpus", UsableCpus()},
              {"memory_bytes", mem_bytes}};
#if GANTRY_CLI_HAS_KERNELS
  j["threads"] = kernels::NumThreads();
  j["cpu"]["bf16"] = kernels::CpuBf16Support();  // what train.precision bf16 runs on
  j["cuda"] = {{"built", kernels::BuiltWithCuda()}, {"devices", kernels::CudaDeviceCount()}};
  nlohmann::json gpus = nlohmann::json::array();
  for (int i = 0; i < kernels::CudaDeviceCount(); ++i) {
    if (auto p = kernels::GetCudaDeviceProperties(i); p.ok()) {
      gpus.push_back({{"index", i}, {"name", p->name}, {"memory_bytes", p->memory_bytes},
                      {"compute", std::to_string(p->compute_major) + "." +
                                      std::to_string(p->compute_minor)}});
    }
  }
  j["cuda"]["gpus"] = gpus;
#else
  j["threads"] = UsableCpus();
  j["cuda"] = {{"built", bool(GANTRY_WITH_CUDA)}, {"devices", 0},
               {"note", "gantry_kernels not built into this binary"}};
#endif
  nlohmann::json tunables = nlohmann::json::object();
  for (const TunableValue& t : ListTunables()) {
    tunables[std::string("GANTRY_") + t.doc.name] = {
        {"default", t.doc.default_value}, {"value", t.env_value}, {"doc", t.doc.doc}};
  }
  j["tunables"] = tunables;
  // RDMA devices from comm/verbs (HCA discovery); an empty list on hosts without HCAs.
  nlohmann::json rdma = {{"devices", nlohmann::json::array()},
                         {"probed", comm::verbs::BuiltWithVerbs()}};
  if (auto ports = comm::verbs::ListDevices(); ports.ok()) {
    for (const auto& p : *ports) {
      rdma["devices"].push_back({{"name", p.device}, {"port", p.port}, {"state", p.state},
                                 {"link", p.link_layer}, {"gid", p.gid},
                                 {"mtu", p.active_mtu}});
    }
    rdma["nccl_ib_hca"] = comm::verbs::NcclIbHca(*ports);
  } else {
    rdma["error"] = ports.status().message();
  }
  j["rdma"] = rdma;
  return j;
}

void PrintText(const nlohmann::json& j) {
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  std::cout << "gantry " << j["version"].get<std::string>() << "\n";
  std::cout << "features: ";
  bool first = true;
  for (const auto& [name, on] : j["features"].items()) {
    std::cout << (first ? "" : ", ") << name << "=" << yes(on.get<bool>());
    first = false;
  }
  std::cout << "\n";
  if (j.contains("host")) {
    std::cout << "host:     " << j["host"]["name"].get<std::string>() << " ("
              << j["host"]["kernel"].get<std::string>() << ", "
              << j["host"]["arch"].get<std::string>() << ")\n";
  }
  const auto& cpu = j["cpu"];
  std::cout << "cpu:      " << cpu["model"].get<std::string>() << "\n"
            << "cores:    " << cpu["usable_cpus"].get<int>() << " usable of "
            << cpu["logical_cpus"].get<int>() << " logical\n"
            << "memory:   " << cpu["memory_bytes"].get<int64_t>() / (1 << 20) << " MiB\n"
            << "threads:  " << j["threads"].get<int>() << " (CPU kernels)\n"
            << (cpu.contains("bf16") ? "bf16:     " + cpu["bf16"].get<std::string>() +
                                           " (train.precision bf16 matmuls)\n"
                                     : std::string())
            << "cuda:     built=" << yes(j["cuda"]["built"].get<bool>())
            << ", devices=" << j["cuda"]["devices"].get<int>() << "\n";
  const auto& rdma = j["rdma"];
  std::cout << "rdma:     ";
  if (!rdma["probed"].get<bool>()) {
    std::cout << "not probed\n";
  } else if (rdma["devices"].empty()) {
    std::cout << "no devices\n";
  } else {
    for (const auto& d : rdma["devices"]) std::cout << d.dump() << " ";
    std::cout << "\n";
  }
  for (const auto& [name, t] : j["tunables"].items()) {
    if (!t["value"].get<std::string>().empty()) {
      std::cout << "tunable:  " << name << "=" << t["value"].get<std::string>() << "\n";
    }
  }
}

CommandRegistration kInfo(
    "info", "Show version, build features, CPU, memory, CUDA and RDMA devices",
    [](CLI::App& app) -> CommandHandler {
      auto output = std::make_shared<std::string>("text");
      app.add_option("-o,--output", *output, "text | json")
          ->check(CLI::IsMember({"text", "json"}));
      return [output]() -> int {
        nlohmann::json j = CollectInfo();
        if (*output == "json") {
          std::cout << j.dump() << std::endl;
        } else {
          PrintText(j);
        }
        return kExitOk;
      };
    });

}  // namespace
}  // namespace gantry::cli
