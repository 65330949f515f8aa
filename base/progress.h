// Progress reporting for long operations (training steps, dataset ingest, uploads).
// On a terminal: one bar redrawn in place ("\r"): percent, counters, rate, ETA, custom
// fields. Otherwise: JSON log lines ("msg":"progress") every N percent or every T seconds,
// through base/logging (so they carry the job/rank context). Thread-safe; cheap to call per
// step (it formats only when it emits).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gantry {

enum class ProgressMode { kAuto, kBar, kJson, kOff };

struct ProgressOptions {
  std::string label = "progress";  // "train", "ingest", ...
  int64_t total = 0;               // 0 = unknown (no percent/ETA)
  std::string unit = "it";         // "steps", "records"; "B" formats as KiB/MiB/GiB
  // kAuto: GANTRY_PROGRESS if set, else a bar when `fd` is a TTY, else JSON.
  ProgressMode mode = ProgressMode::kAuto;
  int fd = 2;                        // where the bar is drawn
  double bar_redraw_s = 0.1;         // bar: redraw at most this often
  double json_every_percent = -1;    // JSON: < 0 = GANTRY_PROGRESS_JSON_EVERY_PERCENT (10)
  double json_every_s = -1;          // JSON: < 0 = GANTRY_PROGRESS_JSON_EVERY_S (30)
  // Monotonic seconds; tests substitute a fake clock. Default: steady_clock.
  std::function<double()> clock;
};

class Progress {
 public:
  explicit Progress(ProgressOptions options);
  ~Progress();  // calls Finish()
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void Update(int64_t done);  // absolute count
  void Add(int64_t n = 1);
  // Custom fields shown after the ETA ("loss=2.31") and in JSON; kept until changed.
  void SetField(std::string_view name, double value);
  void SetField(std::string_view name, std::string_view value);
  // Final report (bar: last redraw + newline; JSON: a line with "final":true). Idempotent.
  void Finish();

  ProgressMode mode() const { return mode_; }
  double rate() const;  // units per second (smoothed)

 private:
  struct FieldValue {
    std::string name;
    bool is_number = false;
    double number = 0;
    std::string text;
  };
  void MaybeEmitLocked(bool force);
  void UpdateRateLocked(double now);
  void DrawBarLocked(double now, bool final);
  void EmitJsonLocked(double now, bool final);
  std::string FormatCount(double v) const;

  ProgressOptions opt_;
  ProgressMode mode_;
  mutable std::mutex mu_;
  int64_t done_ = 0;
  double start_s_ = 0;
  double last_emit_s_ = 0;
  double next_json_percent_ = 0;
  double rate_ = 0;            // smoothed units/s
  double rate_last_s_ = 0;
  int64_t rate_last_done_ = 0;
  bool finished_ = false;
  std::vector<FieldValue> fields_;
};

// "1m05s", "2h03m", "45s".
std::string FormatDuration(double seconds);

}  // namespace gantry
