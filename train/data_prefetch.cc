// PrefetchingDataSource: the producer thread and the hand-over of one buffered batch.
#include "train/data_prefetch.h"

#include <cstring>

namespace gantry::train {

StatusOr<std::unique_ptr<DataSource>> PrefetchingDataSource::Wrap(
    std::unique_ptr<DataSource> inner, const BatchLayout& layout) {
  std::unique_ptr<PrefetchingDataSource> p(new PrefetchingDataSource(std::move(inner)));
  GANTRY_ASSIGN_OR_RETURN(p->buffer_, AllocateBatch(layout, kernels::Device::Cpu()));
  return std::unique_ptr<DataSource>(std::move(p));
}

PrefetchingDataSource::~PrefetchingDataSource() { Stop(); }

void PrefetchingDataSource::Run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !ready_; });
      if (stop_) return;
    }
    // Only this thread touches inner_ and buffer_ while !ready_.
    Status s = inner_->Next(buffer_);
    const DataPosition pos = inner_->position();
    std::lock_guard<std::mutex> lock(mu_);
    ready_ = true;
    ready_status_ = s;
    ready_pos_ = pos;
    cv_.notify_all();
    if (!s.ok()) return;  // the error is handed to Next; Restore starts a fresh thread
  }
}

void PrefetchingDataSource::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = false;
  ready_ = false;
}

Status PrefetchingDataSource::Next(Batch& batch) {
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return ready_; });
  if (!ready_status_.ok()) return ready_status_;  // stays ready: every later Next says so too
  if (batch.inputs.nbytes() != buffer_.inputs.nbytes() ||
      batch.targets.nbytes() != buffer_.targets.nbytes() ||
      batch.inputs.dtype() != buffer_.inputs.dtype() ||
      batch.targets.dtype() != buffer_.targets.dtype() ||
      !batch.inputs.device().is_cpu() || !batch.targets.device().is_cpu()) {
    return InvalidArgumentError("prefetched data: Next needs a CPU batch of the layout given to "
                                "Wrap");
  }
  std::swap(batch.inputs, buffer_.inputs);
  std::swap(batch.targets, buffer_.targets);
  consumed_ = ready_pos_;
  ready_ = false;
  cv_.notify_all();
  return OkStatus();
}

DataPosition PrefetchingDataSource::position() const {
  std::lock_guard<std::mutex> lock(mu_);
  return consumed_;
}

Status PrefetchingDataSource::Restore(const DataPosition& pos) {
  Stop();
  GANTRY_RETURN_IF_ERROR(inner_->Restore(pos));
  std::lock_guard<std::mutex> lock(mu_);
  consumed_ = pos;
  ready_status_ = OkStatus();
  return OkStatus();
}

}  // namespace gantry::train
