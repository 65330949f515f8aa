// Metrics registry: families, series lookup, and the Prometheus text format renderer.
#include "base/metrics.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

namespace gantry {
namespace {

enum Type { kCounter = 0, kGauge = 1, kHistogram = 2 };
const char* TypeName(int t) { return t == kCounter ? "counter" : t == kGauge ? "gauge" : "histogram"; }

void AppendEscaped(std::string* out, const std::string& s, bool quote) {
  for (char c : s) {
    if (c == '\\') {
      *out += "\\\\";
    } else if (c == '\n') {
      *out += "\\n";
    } else if (c == '"' && quote) {
      *out += "\\\"";
    } else {
      *out += c;
    }
  }
}

void AppendLabels(std::string* out, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, const char* le = nullptr) {
  if (names.empty() && le == nullptr) return;
  *out += '{';
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) *out += ',';
    *out += names[i] + "=\"";
    AppendEscaped(out, values[i], true);
    *out += '"';
  }
  if (le != nullptr) {
    if (!names.empty()) *out += ',';
    *out += std::string("le=\"") + le + "\"";
  }
  *out += '}';
}

}  // namespace

struct MetricsRegistry::Family {
  int type;
  std::string help;
  std::vector<std::string> label_names;  // sorted
  std::vector<double> buckets;           // histograms
  struct Series {
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  std::map<std::vector<std::string>, Series> series;  // label values (in label_names order)
};

void Counter::Inc(double v) {
  if (v > 0) value_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  size_t i = std::isnan(v) ? bounds_.size()  // NaN sorts nowhere: count it under +Inf
                           : size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                    bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  for (int i = 0; i < count; ++i, start *= factor) out.push_back(start);
  return out;
}

bool IsValidMetricName(const std::string& n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9')) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  });
}

bool IsValidLabelName(const std::string& n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9') || n.rfind("__", 0) == 0) return false;
  return std::all_of(n.begin(), n.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry& MetricsRegistry::Default() {
  static MetricsRegistry* registry = new MetricsRegistry();
  return *registry;
}

StatusOr<void*> MetricsRegistry::FindOrCreate(int type, const std::string& name,
                                              const std::string& help, const MetricLabels& labels,
                                              const std::vector<double>* buckets) {
  auto fail = [&](const std::string& what) {
    return InvalidArgumentError("metric '" + name + "': " + what);
  };
  if (!IsValidMetricName(name)) return fail("invalid name; use [a-zA-Z_:][a-zA-Z0-9_:]*");
  MetricLabels sorted = labels;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::string> names, values;
  for (const auto& [k, v] : sorted) {
    if (!IsValidLabelName(k)) return fail("invalid label name '" + k + "'");
    if (type == kHistogram && k == "le") return fail("label 'le' is reserved for histograms");
    if (!names.empty() && names.back() == k) return fail("label '" + k + "' given twice");
    names.push_back(k);
    values.push_back(v);
  }
  if (buckets != nullptr) {
    for (size_t i = 0; i < buckets->size(); ++i) {
      if (!std::isfinite((*buckets)[i]) || (i > 0 && (*buckets)[i] <= (*buckets)[i - 1])) {
        return fail("buckets must be finite and strictly increasing");
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& fam = families_[name];
  if (!fam) {
    fam = std::make_unique<Family>();
    fam->type = type;
    fam->help = help;
    fam->label_names = names;
    if (buckets != nullptr) fam->buckets = *buckets;
  } else if (fam->type != type) {
    return fail(std::string("already registered as a ") + TypeName(fam->type));
  } else if (fam->label_names != names) {
    return fail("label names differ from its first registration");
  } else if (fam->help != help) {
    return fail("help text differs from its first registration");
  } else if (buckets != nullptr && fam->buckets != *buckets) {
    return fail("buckets differ from its first registration");
  }
  Family::Series& s = fam->series[values];
  if (type == kCounter) {
    if (!s.counter) s.counter = std::make_unique<Counter>();
    return static_cast<void*>(s.counter.get());
  }
  if (type == kGauge) {
    if (!s.gauge) s.gauge = std::make_unique<Gauge>();
    return static_cast<void*>(s.gauge.get());
  }
  if (!s.histogram) s.histogram = std::make_unique<Histogram>(fam->buckets);
  return static_cast<void*>(s.histogram.get());
}

StatusOr<Counter*> MetricsRegistry::FindOrCreateCounter(const std::string& name,
                                                        const std::string& help,
                                                        const MetricLabels& labels) {
  GANTRY_ASSIGN_OR_RETURN(void* p, FindOrCreate(kCounter, name, help, labels, nullptr));
  return static_cast<Counter*>(p);
}

StatusOr<Gauge*> MetricsRegistry::FindOrCreateGauge(const std::string& name,
                                                    const std::string& help,
                                                    const MetricLabels& labels) {
  GANTRY_ASSIGN_OR_RETURN(void* p, FindOrCreate(kGauge, name, help, labels, nullptr));
  return static_cast<Gauge*>(p);
}

StatusOr<Histogram*> MetricsRegistry::FindOrCreateHistogram(const std::string& name,
                                                            const std::string& help,
                                                            const MetricLabels& labels,
                                                            const std::vector<double>& buckets) {
  GANTRY_ASSIGN_OR_RETURN(void* p, FindOrCreate(kHistogram, name, help, labels, &buckets));
  return static_cast<Histogram*>(p);
}

template <typename T>
static T& OrDie(StatusOr<T*> r) {
  if (!r.ok()) {
    fprintf(stderr, "gantry: metrics misuse (a bug): %s\n", r.status().message().c_str());
    std::abort();
  }
  return **r;
}

Counter& MetricsRegistry::GetCounter(const std::string& name, const std::string& help,
                                     const MetricLabels& labels) {
  return OrDie(FindOrCreateCounter(name, help, labels));
}

Gauge& MetricsRegistry::GetGauge(const std::string& name, const std::string& help,
                                 const MetricLabels& labels) {
  return OrDie(FindOrCreateGauge(name, help, labels));
}

Histogram& MetricsRegistry::GetHistogram(const std::string& name, const std::string& help,
                                         const MetricLabels& labels,
                                         const std::vector<double>& buckets) {
  return OrDie(FindOrCreateHistogram(name, help, labels, buckets));
}

std::string MetricsRegistry::RenderText() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    out += "# HELP " + name + " ";
    AppendEscaped(&out, fam->help, false);
    out += "\n# TYPE " + name + " " + TypeName(fam->type) + "\n";
    for (const auto& [values, s] : fam->series) {
      if (fam->type != kHistogram) {
        out += name;
        AppendLabels(&out, fam->label_names, values);
        double v = fam->type == kCounter ? s.counter->Value() : s.gauge->Value();
        out += " " + FormatMetricValue(v) + "\n";
        continue;
      }
      const Histogram& h = *s.histogram;
      std::vector<uint64_t> counts = h.BucketCounts();
      uint64_t cumulative = 0;
      for (size_t i = 0; i < counts.size(); ++i) {
        cumulative += counts[i];
        std::string le = i < h.bounds().size() ? FormatMetricValue(h.bounds()[i]) : "+Inf";
        out += name + "_bucket";
        AppendLabels(&out, fam->label_names, values, le.c_str());
        out += " " + std::to_string(cumulative) + "\n";
      }
      out += name + "_sum";
      AppendLabels(&out, fam->label_names, values);
      out += " " + FormatMetricValue(h.Sum()) + "\n";
      out += name + "_count";
      AppendLabels(&out, fam->label_names, values);
      out += " " + std::to_string(cumulative) + "\n";
    }
  }
  return out;
}

}  // namespace gantry
