// Progress reporter: JSON mode emission schedule (percent steps and time) with a fake clock,
// field values, the final line; bar mode output into a pipe.
#include "base/progress.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "base/logging.h"

namespace gantry {
namespace {

class ProgressJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogLevel(LogLevel::kInfo);
    SetLogSink([this](std::string_view l) { lines_.push_back(nlohmann::json::parse(l)); });
  }
  void TearDown() override { SetLogSink(nullptr); }
  ProgressOptions Options(int64_t total) {
    ProgressOptions o;
    o.label = "train";
    o.total = total;
    o.unit = "steps";
    o.mode = ProgressMode::kJson;
    o.json_every_percent = 25;
    o.json_every_s = 60;
    o.clock = [this] { return now_; };
    return o;
  }
  double now_ = 1000;
  std::vector<nlohmann::json> lines_;
};

TEST_F(ProgressJsonTest, EmitsAtPercentStepsWithRateAndEta) {
  {
    Progress p(Options(100));
    EXPECT_EQ(p.mode(), ProgressMode::kJson);
    for (int i = 1; i <= 100; ++i) {
      now_ += 0.1;  // 10 steps/s
      p.SetField("loss", 10.0 / i);
      p.Update(i);
    }
    EXPECT_NEAR(p.rate(), 10.0, 0.5);
    // Leaving scope calls Finish().
  }
  // 25, 50, 75, 100 percent + the final line.
  ASSERT_EQ(lines_.size(), 5u);
  EXPECT_EQ(lines_[0]["msg"], "progress");
  EXPECT_EQ(lines_[0]["label"], "train");
  EXPECT_EQ(lines_[0]["done"], 25);
  EXPECT_EQ(lines_[0]["total"], 100);
  EXPECT_EQ(lines_[0]["percent"], 25.0);
  EXPECT_NEAR(lines_[1]["rate"].get<double>(), 10.0, 0.5);
  EXPECT_NEAR(lines_[1]["eta_s"].get<double>(), 5.0, 0.6);  // 50 steps left at 10/s
  EXPECT_NEAR(lines_[1]["loss"].get<double>(), 0.2, 1e-9);
  EXPECT_EQ(lines_[4]["final"], true);
  EXPECT_EQ(lines_[4]["done"], 100);
  EXPECT_NEAR(lines_[4]["elapsed_s"].get<double>(), 10.0, 1e-6);
}

TEST_F(ProgressJsonTest, EmitsOnTimeWhenTotalUnknown) {
  Progress p(Options(0));
  for (int i = 1; i <= 300; ++i) {
    now_ += 1;
    p.Add(2);
  }
  p.SetField("phase", "upload");
  p.Finish();
  p.Finish();  // idempotent
  p.Add(1);    // ignored after Finish
  // every 60 s for 300 s -> 5 lines, plus the final line
  ASSERT_EQ(lines_.size(), 6u);
  EXPECT_EQ(lines_[0]["done"], 120);
  EXPECT_FALSE(lines_[0].contains("percent"));
  EXPECT_EQ(lines_[5]["done"], 600);
  EXPECT_EQ(lines_[5]["phase"], "upload");
  EXPECT_NEAR(lines_[5]["rate"].get<double>(), 2.0, 0.1);
}

TEST_F(ProgressJsonTest, OffModeWritesNothing) {
  auto o = Options(10);
  o.mode = ProgressMode::kOff;
  Progress p(o);
  p.Update(10);
  p.Finish();
  EXPECT_TRUE(lines_.empty());
}

TEST(ProgressBarTest, DrawsBarWithFieldsIntoFd) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  double now = 0;
  ProgressOptions o;
  o.label = "ingest";
  o.total = 4 << 20;
  o.unit = "B";
  o.mode = ProgressMode::kBar;
  o.fd = fds[1];
  o.clock = [&] { return now; };
  {
    Progress p(o);
    now = 1;
    p.SetField("shard", "3/8");
    p.Update(1 << 20);  // 1 MiB/s, 25 %
    now = 2;
    p.Update(4 << 20);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, size_t(n));
  close(fds[0]);
  EXPECT_NE(out.find("\ringest 25% |######"), std::string::npos) << out;
  EXPECT_NE(out.find("1.0 MiB/4.0 MiB"), std::string::npos) << out;
  EXPECT_NE(out.find("ETA 3s"), std::string::npos) << out;
  EXPECT_NE(out.find("shard=3/8"), std::string::npos) << out;
  EXPECT_NE(out.find("100% |########################|"), std::string::npos) << out;
  EXPECT_EQ(out.back(), '\n');
}

TEST(ProgressFormatTest, Durations) {
  EXPECT_EQ(FormatDuration(5), "5s");
  EXPECT_EQ(FormatDuration(65), "1m05s");
  EXPECT_EQ(FormatDuration(7380), "2h03m");
  EXPECT_EQ(FormatDuration(-1), "?");
}

}  // namespace
}  // namespace gantry
