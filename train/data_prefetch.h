// PrefetchingDataSource: wraps a DataSource and produces the next batch on a background thread
// while the trainer computes (or waits for gradients) on the current one, so reading, decoding
// or generating data overlaps the step instead of adding to it. One batch ahead, in one
// preallocated buffer; Next hands it over by swapping tensors with the caller's batch (no
// copy: copying 400 KB written by another core was ~3% of an mlp-mnist step) and lets the
// thread fill the caller's old tensors next. So `batch` must have the layout given to Wrap,
// and whoever keeps other handles to its tensors must take them again after Next.
// Transparent: the same batches in the same order, and position() is the position after the
// last batch Next returned (what a checkpoint must store), not the thread's. Errors of the
// inner source surface from the Next that would have returned that batch.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "train/data.h"

namespace gantry::train {

class PrefetchingDataSource : public DataSource {
 public:
  // `layout`: the batches Next is called with (the buffer is allocated here, once).
  static StatusOr<std::unique_ptr<DataSource>> Wrap(std::unique_ptr<DataSource> inner,
                                                    const BatchLayout& layout);
  ~PrefetchingDataSource() override;

  Status Next(Batch& batch) override;
  DataPosition position() const override;
  Status Restore(const DataPosition& pos) override;
  int64_t batches_per_epoch() const override { return inner_->batches_per_epoch(); }
  std::string tokenizer() const override { return inner_->tokenizer(); }
  std::string description() const override { return inner_->description() + ", prefetched"; }

 private:
  explicit PrefetchingDataSource(std::unique_ptr<DataSource> inner)
      : inner_(std::move(inner)), consumed_(inner_->position()) {}
  void Run();   // the producer thread
  void Stop();  // joins the producer (a ready batch is dropped; consumed_ stays)

  std::unique_ptr<DataSource> inner_;  // touched only by the producer while it runs
  Batch buffer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool ready_ = false;          // buffer_ holds the next batch (or its error)
  Status ready_status_;
  DataPosition ready_pos_;      // inner position after the buffered batch
  DataPosition consumed_;       // position after the last batch Next returned
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace gantry::train
