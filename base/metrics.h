// Metrics registry rendering the Prometheus text exposition format 0.0.4 (counters, gauges,
// histograms; each family with fixed label names). Updates are lock-free atomics; creating a
// series takes a lock (do it once, keep the reference). Series live as long as the registry.
//   auto& steps = MetricsRegistry::Default().GetCounter(
//       "gantry_train_steps_total", "Optimizer steps completed", {{"job", "gpt-tiny"}});
//   steps.Inc();
// Serve it with ServeMetrics (base/http_server.h) at GET /metrics.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace gantry {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;  // name -> value

class Counter {
 public:
  void Inc(double v = 1.0);  // v must be >= 0 (negative increments are ignored)
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Dec(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // sorted, finite; +Inf is implicit
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Per-bucket (non-cumulative) counts, the last one being +Inf; sum and count.
  std::vector<uint64_t> BucketCounts() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0.0};
  std::atomic<uint64_t> count_{0};
};

// Prometheus' default buckets (seconds): 0.005 ... 10.
std::vector<double> DefaultLatencyBuckets();
// start, start*factor, ... (count bounds).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  static MetricsRegistry& Default();  // process-wide; never destroyed

  // Find-or-create. Errors (kInvalidArgument): bad metric or label name, the name already
  // used with another type, help or label names, bad buckets.
  StatusOr<Counter*> FindOrCreateCounter(const std::string& name, const std::string& help,
                                         const MetricLabels& labels = {});
  StatusOr<Gauge*> FindOrCreateGauge(const std::string& name, const std::string& help,
                                     const MetricLabels& labels = {});
  StatusOr<Histogram*> FindOrCreateHistogram(const std::string& name, const std::string& help,
                                             const MetricLabels& labels,
                                             const std::vector<double>& buckets);

  // The same, for names and labels fixed in code: a misuse is a programmer error and aborts
  // with the message.
  Counter& GetCounter(const std::string& name, const std::string& help,
                      const MetricLabels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help,
                  const MetricLabels& labels = {});
  Histogram& GetHistogram(const std::string& name, const std::string& help,
                          const MetricLabels& labels = {},
                          const std::vector<double>& buckets = DefaultLatencyBuckets());

  // Text exposition format 0.0.4; families sorted by name, series by label values.
  std::string RenderText() const;
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  struct Family;
  StatusOr<void*> FindOrCreate(int type, const std::string& name, const std::string& help,
                               const MetricLabels& labels, const std::vector<double>* buckets);
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family>> families_;
};

// Helpers for other formats (and tests).
bool IsValidMetricName(const std::string& name);
bool IsValidLabelName(const std::string& name);
std::string FormatMetricValue(double v);  // "1", "0.25", "+Inf", "-Inf", "NaN"

}  // namespace gantry
