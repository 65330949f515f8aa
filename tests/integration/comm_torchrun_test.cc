// `gantry train` under torchrun's default (static) rendezvous: torchrun's agent holds
// MASTER_PORT with its own store and sets TORCHELASTIC_USE_AGENT_STORE=True, so Gantry's store
// must go elsewhere (MASTER_PORT+1). Skipped where /usr/bin/python3 has no torch.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "comm/tcp/socket.h"

namespace gantry::comm {
namespace {

constexpr char kPython[] = "/usr/bin/python3";

int Shell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string Read(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t Count(const std::string& s, const std::string& part) {
  size_t n = 0;
  for (size_t at = s.find(part); at != std::string::npos; at = s.find(part, at + 1)) ++n;
  return n;
}

TEST(Torchrun, GantryTrainUnderStaticRendezvous) {
  if (Shell(std::string(kPython) + " -c 'import torch.distributed.run' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << kPython << " has no torch.distributed.run";
  }
  char tmpl[] = "/tmp/gantry-torchrun-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::filesystem::path dir = tmpl;
  std::ofstream(dir / "job.yaml")
      << "name: torchrun-mlp\nkind: train\nmodel: {type: mlp, widths: [8, 8, 2]}\n"
         "data: {uri: synthetic, batch_per_rank: 4, synthetic_samples: 64}\n"
         "optimizer: {type: sgd, lr: 0.01}\n"
         "train: {steps: 5, log_every: 500, checkpoint_every: 500}\ncomm: {timeout_s: 60}\n";
  int port = 0;  // free for torchrun's agent, and port+1 for Gantry's store
  for (int attempt = 0; attempt < 50 && port == 0; ++attempt) {
    auto a = Listen("127.0.0.1", 0);
    if (a.ok() && BoundPort(*a) < 65535 && Listen("", BoundPort(*a) + 1).ok()) port = BoundPort(*a);
  }
  ASSERT_GT(port, 0);
  // --redirects/--tee: torch 1.13's default stdout handling fails under Python 3.11.
  const std::string cmd =
      "cd " + dir.string() + " && timeout -k 5 150 " + kPython +
      " -m torch.distributed.run --nproc_per_node 2 --master_port " + std::to_string(port) +
      " --redirects 1 --tee 1 --log_dir " + (dir / "logs").string() + " --no_python " +
      GANTRY_BINARY + " train job.yaml --progress off --checkpoint-dir " + (dir / "ck").string() +
      " > " + (dir / "out.txt").string() + " 2>&1";
  const int rc = Shell(cmd);
  const std::string out = Read(dir / "out.txt");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(Count(out, "ranks connected"), 2u) << out;
  EXPECT_GE(Count(out, "MASTER_PORT+1"), 2u) << out;
  EXPECT_EQ(Count(out, "Address already in use"), 0u) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace gantry::comm
