// The `gantry` binary's shell (cli/main.cc, cli/command.cc, cli/cmd_info.cc), run as a real
// process: help, version, exit codes for usage errors, and `info -o json`.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "gantry_config.h"

namespace {

struct Result {
  int code;
  std::string out;  // stdout + stderr
};

Result RunGantry(const std::string& args) {
  std::string cmd = std::string(GANTRY_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  Result r{-1, ""};
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(GantryCliTest, HelpListsCommands) {
  Result r = RunGantry("--help");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("info"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--version"), std::string::npos);
}

TEST(GantryCliTest, Version) {
  Result r = RunGantry("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, std::string("gantry ") + GANTRY_VERSION + "\n");
}

TEST(GantryCliTest, UsageErrorsExitTwo) {
  Result unknown = RunGantry("frobnicate");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.out.find("unknown command 'frobnicate'"), std::string::npos) << unknown.out;
  Result flag = RunGantry("info --bogus");
  EXPECT_EQ(flag.code, 2);
  EXPECT_NE(flag.out.find("--bogus"), std::string::npos) << flag.out;
  Result value = RunGantry("info -o xml");
  EXPECT_EQ(value.code, 2);
  EXPECT_NE(value.out.find("xml"), std::string::npos) << value.out;
  EXPECT_EQ(RunGantry("").code, 2);
  Result level = RunGantry("--log-level loud info");
  EXPECT_EQ(level.code, 2);
  EXPECT_NE(level.out.find("'loud'"), std::string::npos) << level.out;
  // Sizes that used to reach a static_cast<uint64_t> of a negative or NaN (std::bad_alloc).
  for (const char* bad : {"--shard-mb -1", "--shard-mb nan", "--chunk-kb inf", "--window 1"}) {
    Result r = RunGantry(std::string("dataset put /nonexistent /tmp/gantry-cli-test-never ") + bad);
    EXPECT_EQ(r.code, 2) << bad << "\n" << r.out;
    EXPECT_NE(r.out.find(std::string(bad).substr(0, 8)), std::string::npos) << r.out;
  }
  // Cluster settings that left it broken (workers flapping, ports wrapped to another number).
  for (const char* bad : {"coordinator --heartbeat-ms 0", "coordinator --lost-after 0",
                          "up --workers 0", "up --port 99999", "worker --metrics-port 99999",
                          "list --timeout-ms -1", "list --limit 0", "logs j-1 --rank -2"}) {
    Result r = RunGantry(bad);
    EXPECT_EQ(r.code, 2) << bad << "\n" << r.out;
  }
  Result bind = RunGantry("coordinator --bind tcp://127.0.0.1:99999 --dir /nonexistent/gantry");
  EXPECT_EQ(bind.code, 1) << bind.out;
  EXPECT_NE(bind.out.find("port '99999'"), std::string::npos) << bind.out;
  Result scheme = RunGantry("workers --coordinator 127.0.0.1:7450");
  EXPECT_EQ(scheme.code, 1) << scheme.out;
  EXPECT_NE(scheme.out.find("tcp://HOST:PORT"), std::string::npos) << scheme.out;
  Result quota = RunGantry("coordinator --quota team=lots --dir /nonexistent/gantry");
  EXPECT_EQ(quota.code, 1) << quota.out;
  EXPECT_NE(quota.out.find("--quota team=lots"), std::string::npos) << quota.out;
}

TEST(GantryCliTest, InfoJson) {
  Result r = RunGantry("info -o json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["version"], GANTRY_VERSION);
  EXPECT_EQ(j["features"]["cuda"].get<bool>(), bool(GANTRY_WITH_CUDA));
  EXPECT_EQ(j["features"]["ceph"].get<bool>(), bool(GANTRY_WITH_CEPH));
  EXPECT_GE(j["cpu"]["usable_cpus"].get<int>(), 1);
  EXPECT_GT(j["cpu"]["memory_bytes"].get<int64_t>(), 0);
  EXPECT_GE(j["cuda"]["devices"].get<int>(), 0);
  EXPECT_TRUE(j["rdma"].contains("devices"));
  Result text = RunGantry("info");
  EXPECT_EQ(text.code, 0);
  EXPECT_NE(text.out.find("features:"), std::string::npos) << text.out;
}

}  // namespace
