// Metrics registry: exact text exposition output (HELP/TYPE, label escaping, histogram
// buckets), registration errors, concurrency, and validation with promtool when installed.
#include "base/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <vector>

namespace gantry {
namespace {

TEST(MetricsTest, RendersCountersAndGaugesExactly) {
  MetricsRegistry r;
  r.GetCounter("gantry_steps_total", "Optimizer steps completed", {{"job", "gpt"}}).Inc(3);
  r.GetCounter("gantry_steps_total", "Optimizer steps completed", {{"job", "a\"b\\c\nd"}}).Inc();
  r.GetGauge("gantry_loss", "Training loss\nlast step \\ mean").Set(2.5);
  EXPECT_EQ(r.RenderText(),
            "# HELP gantry_loss Training loss\\nlast step \\\\ mean\n"
            "# TYPE gantry_loss gauge\n"
            "gantry_loss 2.5\n"
            "# HELP gantry_steps_total Optimizer steps completed\n"
            "# TYPE gantry_steps_total counter\n"
            "gantry_steps_total{job=\"a\\\"b\\\\c\\nd\"} 1\n"
            "gantry_steps_total{job=\"gpt\"} 3\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  MetricsRegistry r;
  Histogram& h = r.GetHistogram("gantry_step_seconds", "Step time", {{"rank", "0"}},
                                {0.1, 0.5, 1});
  for (double v : {0.05, 0.1, 0.3, 0.7, 5.0}) h.Observe(v);
  EXPECT_EQ(r.RenderText(),
            "# HELP gantry_step_seconds Step time\n"
            "# TYPE gantry_step_seconds histogram\n"
            "gantry_step_seconds_bucket{rank=\"0\",le=\"0.1\"} 2\n"
            "gantry_step_seconds_bucket{rank=\"0\",le=\"0.5\"} 3\n"
            "gantry_step_seconds_bucket{rank=\"0\",le=\"1\"} 4\n"
            "gantry_step_seconds_bucket{rank=\"0\",le=\"+Inf\"} 5\n"
            "gantry_step_seconds_sum{rank=\"0\"} 6.15\n"
            "gantry_step_seconds_count{rank=\"0\"} 5\n");
  EXPECT_EQ(h.Count(), 5u);
}

TEST(MetricsTest, LabelsAreSortedAndSeriesShared) {
  MetricsRegistry r;
  Counter& a = r.GetCounter("x_total", "x", {{"b", "1"}, {"a", "2"}});
  Counter& b = r.GetCounter("x_total", "x", {{"a", "2"}, {"b", "1"}});
  EXPECT_EQ(&a, &b);
  a.Inc(0.5);
  a.Inc(-4);  // ignored: counters only go up
  EXPECT_NE(r.RenderText().find("x_total{a=\"2\",b=\"1\"} 0.5\n"), std::string::npos);
}

TEST(MetricsTest, RegistrationErrors) {
  MetricsRegistry r;
  ASSERT_TRUE(r.FindOrCreateCounter("ok_total", "h", {{"job", "x"}}).ok());
  auto expect_err = [](const Status& s, const std::string& what) {
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
  };
  expect_err(r.FindOrCreateCounter("1bad", "h").status(), "invalid name");
  expect_err(r.FindOrCreateCounter("bad-name", "h").status(), "invalid name");
  expect_err(r.FindOrCreateGauge("ok_total", "h", {{"job", "x"}}).status(),
             "already registered as a counter");
  expect_err(r.FindOrCreateCounter("ok_total", "h", {{"rank", "0"}}).status(),
             "label names differ");
  expect_err(r.FindOrCreateCounter("ok_total", "other help", {{"job", "y"}}).status(),
             "help text differs");
  expect_err(r.FindOrCreateCounter("c_total", "h", {{"__x", "1"}}).status(), "invalid label name");
  expect_err(r.FindOrCreateCounter("c_total", "h", {{"a", "1"}, {"a", "2"}}).status(), "twice");
  expect_err(r.FindOrCreateHistogram("h_seconds", "h", {{"le", "1"}}, {1}).status(), "reserved");
  expect_err(r.FindOrCreateHistogram("h_seconds", "h", {}, {1, 1}).status(), "strictly increasing");
}

TEST(MetricsTest, ConcurrentIncrementsAreNotLost) {
  MetricsRegistry r;
  Counter& c = r.GetCounter("n_total", "n");
  Histogram& h = r.GetHistogram("d_seconds", "d");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) c.Inc(), h.Observe(0.001);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Value(), 40000.0);
  EXPECT_EQ(h.Count(), 40000u);
  EXPECT_EQ(h.BucketCounts()[0], 40000u);
}

TEST(MetricsTest, ValueFormatting) {
  EXPECT_EQ(FormatMetricValue(1), "1");
  EXPECT_EQ(FormatMetricValue(0.25), "0.25");
  EXPECT_EQ(FormatMetricValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatMetricValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

// promtool (Debian package prometheus) parses the output like a real scraper.
TEST(MetricsTest, PromtoolAcceptsOutput) {
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not installed (apt-get install --no-install-recommends prometheus)";
  }
  MetricsRegistry r;
  r.GetCounter("gantry_requests_total", "Requests served", {{"code", "200"}, {"path", "/x\"y"}})
      .Inc(7);
  r.GetGauge("gantry_queue_depth", "Jobs waiting").Set(-3);
  r.GetHistogram("gantry_latency_seconds", "Request latency", {{"model", "gpt"}}).Observe(0.02);
  r.GetHistogram("gantry_latency_seconds", "Request latency", {{"model", "mlp"}}).Observe(20);
  std::string path = ::testing::TempDir() + "/gantry_metrics_test.prom";
  std::ofstream(path) << r.RenderText();
  int rc = std::system(("promtool check metrics < " + path + " > " + path + ".out 2>&1").c_str());
  std::ifstream out(path + ".out");
  std::string report((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << report << "\n" << r.RenderText();
  std::remove(path.c_str());
  std::remove((path + ".out").c_str());
}

}  // namespace
}  // namespace gantry
