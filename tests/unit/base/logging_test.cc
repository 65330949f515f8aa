// JSON-lines logging: every line parses back as JSON with the expected fields, escaping is
// correct for hostile strings, context fields appear on every line, and the level filter works.
#include "base/logging.h"

#include <gtest/gtest.h>

#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

namespace gantry {
namespace {

class LoggingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogLevel(LogLevel::kDebug);
    SetLogSink([this](std::string_view line) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.emplace_back(line);
    });
  }
  void TearDown() override {
    SetLogSink(nullptr);
    ClearLogContext();
    SetLogLevel(LogLevel::kInfo);
  }
  nlohmann::json Parse(size_t i) {
    EXPECT_LT(i, lines_.size());
    EXPECT_EQ(lines_[i].back(), '\n');
    return nlohmann::json::parse(lines_[i]);
  }
  std::mutex mu_;
  std::vector<std::string> lines_;
};

TEST_F(LoggingTest, BuilderLineIsValidJsonWithFields) {
  GANTRY_LOG(INFO, "step").Field("step", 10).Field("loss", 2.25).Field("ok", true)
      .Field("name", "gpt").Field("big", uint64_t(18446744073709551615ull));
  ASSERT_EQ(lines_.size(), 1u);
  auto j = Parse(0);
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["msg"], "step");
  EXPECT_EQ(j["step"], 10);
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 2.25);
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["name"], "gpt");
  EXPECT_EQ(j["big"].get<uint64_t>(), 18446744073709551615ull);
  EXPECT_NE(j["src"].get<std::string>().find("logging_test.cc:"), std::string::npos);
  // RFC3339 UTC with milliseconds: 2024-05-01T12:00:00.123Z
  std::string ts = j["ts"];
  ASSERT_EQ(ts.size(), 24u) << ts;
  EXPECT_EQ(ts[10], 'T');
  EXPECT_EQ(ts[19], '.');
  EXPECT_EQ(ts.back(), 'Z');
}

TEST_F(LoggingTest, EscapesHostileStrings) {
  std::string hostile = "quote\" backslash\\ nl\n tab\t cr\r ctl\x01 del\x7f utf8 \xc3\xa9 bad \xff\xc3";
  GANTRY_LOG(WARNING, hostile).Field(hostile, hostile);
  auto j = Parse(0);
  std::string expected = "quote\" backslash\\ nl\n tab\t cr\r ctl\x01 del\x7f utf8 \xc3\xa9 bad "
                         "\xef\xbf\xbd\xef\xbf\xbd";
  EXPECT_EQ(j["msg"], expected);
  EXPECT_EQ(j[expected], expected);
  EXPECT_EQ(lines_[0].find('\n'), lines_[0].size() - 1) << "one line per record";
}

TEST_F(LoggingTest, NonFiniteNumbersStayValidJson) {
  GANTRY_LOG(ERROR, "diverged").Field("loss", std::nan("")).Field("grad", 1.0 / 0.0);
  auto j = Parse(0);
  EXPECT_EQ(j["loss"], "NaN");
  EXPECT_EQ(j["grad"], "Infinity");
  EXPECT_EQ(j["level"], "error");
}

TEST_F(LoggingTest, ContextFieldsOnEveryLine) {
  SetLogContext("job", "gpt-tiny");
  SetLogContext("rank", 3);
  SetLogContext("attempt", 0);
  SetLogContext("rank", 1);  // replaces
  GANTRY_LOG(INFO, "a");
  Log(LogLevel::kInfo, "b", {{"step", 5}, {"uri", "file:///x"}, {"lr", 0.5}, {"on", false}});
  ASSERT_EQ(lines_.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    auto j = Parse(i);
    EXPECT_EQ(j["job"], "gpt-tiny");
    EXPECT_EQ(j["rank"], 1);
    EXPECT_EQ(j["attempt"], 0);
  }
  auto b = Parse(1);
  EXPECT_EQ(b["step"], 5);
  EXPECT_EQ(b["uri"], "file:///x");
  EXPECT_EQ(b["lr"], 0.5);
  EXPECT_EQ(b["on"], false);
}

TEST_F(LoggingTest, LevelFilterSkipsFieldEvaluation) {
  SetLogLevel(LogLevel::kWarning);
  int evaluated = 0;
  auto count = [&] { return ++evaluated; };
  GANTRY_LOG(INFO, "hidden").Field("n", count());
  GANTRY_LOG(DEBUG, "hidden");
  Log(LogLevel::kInfo, "hidden");
  GANTRY_LOG(WARNING, "shown").Field("n", count());
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(evaluated, 1);
  EXPECT_EQ(Parse(0)["msg"], "shown");
  SetLogLevel(LogLevel::kOff);
  GANTRY_LOG(ERROR, "off");
  EXPECT_EQ(lines_.size(), 1u);
}

TEST_F(LoggingTest, StatusField) {
  GANTRY_LOG(ERROR, "save failed").Field("error", UnavailableError("osd down"));
  EXPECT_EQ(Parse(0)["error"], "UNAVAILABLE: osd down");
}

TEST_F(LoggingTest, ConcurrentLinesStayWhole) {
  constexpr int kThreads = 4, kLines = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < kLines; ++i) GANTRY_LOG(INFO, "tick").Field("t", t).Field("i", i);
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(lines_.size(), size_t(kThreads * kLines));
  std::vector<int> per_thread(kThreads, 0);
  for (size_t i = 0; i < lines_.size(); ++i) per_thread[Parse(i)["t"].get<int>()]++;
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(per_thread[t], kLines);
}

TEST(LogLevelTest, ParseNames) {
  EXPECT_EQ(*ParseLogLevel("WARN"), LogLevel::kWarning);
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("off"), LogLevel::kOff);
  auto bad = ParseLogLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'loud'"), std::string::npos);
}

TEST(LoggingStderrTest, WritesToStderrByDefault) {
  SetLogLevel(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  GANTRY_LOG(INFO, "to stderr").Field("k", 1);
  std::string out = ::testing::internal::GetCapturedStderr();
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["msg"], "to stderr");
  EXPECT_EQ(j["k"], 1);
}

}  // namespace
}  // namespace gantry
