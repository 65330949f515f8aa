// Progress: rate smoothing, TTY bar drawing and JSON progress lines.
#include "base/progress.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "base/logging.h"
#include "base/tunables.h"

namespace gantry {
namespace {

constexpr double kRateWindowS = 0.5;  // recompute the rate at most this often
constexpr double kRateTauS = 5.0;     // smoothing time constant of the rate
constexpr int kBarWidth = 24;

double SteadyNow() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

ProgressMode ResolveMode(const ProgressOptions& opt) {
  if (opt.mode != ProgressMode::kAuto) return opt.mode;
  std::string env = TunableString("PROGRESS", "auto");
  if (env == "bar") return ProgressMode::kBar;
  if (env == "json") return ProgressMode::kJson;
  if (env == "off") return ProgressMode::kOff;
  return isatty(opt.fd) ? ProgressMode::kBar : ProgressMode::kJson;
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

}  // namespace

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = int64_t(seconds + 0.5);
  char buf[64];
  if (s < 60) {
    snprintf(buf, sizeof(buf), "%llds", (long long)s);
  } else if (s < 3600) {
    snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  } else {
    snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  }
  return buf;
}

Progress::Progress(ProgressOptions options) : opt_(std::move(options)) {
  if (!opt_.clock) opt_.clock = SteadyNow;
  if (opt_.json_every_percent < 0) {
    opt_.json_every_percent = TunableDouble("PROGRESS_JSON_EVERY_PERCENT", 10);
  }
  if (opt_.json_every_s < 0) opt_.json_every_s = TunableDouble("PROGRESS_JSON_EVERY_S", 30);
  mode_ = ResolveMode(opt_);
  start_s_ = last_emit_s_ = rate_last_s_ = opt_.clock();
  next_json_percent_ = opt_.json_every_percent > 0 ? opt_.json_every_percent : 1e300;
}

Progress::~Progress() { Finish(); }

void Progress::Update(int64_t done) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  done_ = done;
  MaybeEmitLocked(false);
}

void Progress::Add(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  done_ += n;
  MaybeEmitLocked(false);
}

void Progress::SetField(std::string_view name, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& f : fields_) {
    if (f.name == name) return void((f.is_number = true, f.number = value));
  }
  fields_.push_back({std::string(name), true, value, ""});
}

void Progress::SetField(std::string_view name, std::string_view value) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& f : fields_) {
    if (f.name == name) return void((f.is_number = false, f.text = std::string(value)));
  }
  fields_.push_back({std::string(name), false, 0, std::string(value)});
}

void Progress::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  MaybeEmitLocked(true);
  finished_ = true;
}

double Progress::rate() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rate_;
}

void Progress::UpdateRateLocked(double now) {
  double dt = now - rate_last_s_;
  if (dt < kRateWindowS && rate_ > 0) return;
  if (dt <= 0) return;
  double inst = double(done_ - rate_last_done_) / dt;
  if (rate_ <= 0) {
    rate_ = inst;
  } else {
    rate_ += (1.0 - std::exp(-dt / kRateTauS)) * (inst - rate_);
  }
  rate_last_s_ = now;
  rate_last_done_ = done_;
}

void Progress::MaybeEmitLocked(bool force) {
  if (mode_ == ProgressMode::kOff) return;
  double now = opt_.clock();
  UpdateRateLocked(now);
  if (mode_ == ProgressMode::kBar) {
    if (force || now - last_emit_s_ >= opt_.bar_redraw_s) DrawBarLocked(now, force);
    return;
  }
  double percent = opt_.total > 0 ? 100.0 * double(done_) / double(opt_.total) : 0;
  bool due = force || now - last_emit_s_ >= opt_.json_every_s ||
             (opt_.total > 0 && percent >= next_json_percent_);
  if (!due) return;
  if (opt_.total > 0 && opt_.json_every_percent > 0) {
    next_json_percent_ =
        (std::floor(percent / opt_.json_every_percent) + 1) * opt_.json_every_percent;
  }
  EmitJsonLocked(now, force);
}

std::string Progress::FormatCount(double v) const {
  if (opt_.unit != "B") {
    return v == std::floor(v) && std::fabs(v) < 1e15 ? std::to_string(int64_t(v)) : Fixed(v, 1);
  }
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::fabs(v) >= 1024 && u < 4) v /= 1024, ++u;
  return Fixed(v, u == 0 ? 0 : 1) + " " + kUnits[u];
}

void Progress::DrawBarLocked(double now, bool final) {
  std::string line = "\r" + opt_.label + " ";
  std::string unit = opt_.unit == "B" ? "" : " " + opt_.unit;
  if (opt_.total > 0) {
    double frac = std::min(1.0, std::max(0.0, double(done_) / double(opt_.total)));
    int filled = int(frac * kBarWidth + 0.5);
    line += Fixed(100 * frac, 0) + "% |" + std::string(size_t(filled), '#') +
            std::string(size_t(kBarWidth - filled), ' ') + "| ";
    line += FormatCount(double(done_)) + "/" + FormatCount(double(opt_.total)) + unit;
  } else {
    line += FormatCount(double(done_)) + unit;
  }
  std::string rate_unit = opt_.unit == "B" ? "/s" : " " + opt_.unit + "/s";
  line += "  " + (rate_ >= 100 || opt_.unit == "B" ? FormatCount(std::round(rate_)) : Fixed(rate_, 2)) +
          rate_unit;
  if (final || opt_.total <= 0) {
    line += "  elapsed " + FormatDuration(now - start_s_);
  } else if (rate_ > 0) {
    line += "  ETA " + FormatDuration(double(opt_.total - done_) / rate_);
  }
  for (const auto& f : fields_) {
    line += "  " + f.name + "=";
    if (f.is_number) {
      char buf[32];
      snprintf(buf, sizeof(buf), "%.4g", f.number);
      line += buf;
    } else {
      line += f.text;
    }
  }
  line += "\x1b[K";  // clear what a longer previous line left behind
  if (final) line += "\n";
  for (size_t off = 0; off < line.size();) {
    ssize_t n = ::write(opt_.fd, line.data() + off, line.size() - off);
    if (n <= 0) break;
    off += size_t(n);
  }
  last_emit_s_ = now;
}

void Progress::EmitJsonLocked(double now, bool final) {
  LogLine out(LogLevel::kInfo, "progress");
  out.Field("label", opt_.label).Field("done", done_).Field("unit", opt_.unit);
  if (opt_.total > 0) {
    out.Field("total", opt_.total);
    out.Field("percent", std::round(1000.0 * double(done_) / double(opt_.total)) / 10.0);
    if (rate_ > 0 && !final) out.Field("eta_s", std::round(double(opt_.total - done_) / rate_));
  }
  out.Field("rate", rate_).Field("elapsed_s", std::round((now - start_s_) * 1000) / 1000);
  for (const auto& f : fields_) {
    if (f.is_number) {
      out.Field(f.name, f.number);
    } else {
      out.Field(f.name, f.text);
    }
  }
  if (final) out.Field("final", true);
  last_emit_s_ = now;
}

}  // namespace gantry
