// DatasetLoader: epoch plans, grouped async chunk reads with CRC checks, prefetch thread.
#include "storage/loader.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "storage/checksum.h"

namespace gantry::storage {
namespace {

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0) {
  uint64_t s = a;
  for (uint64_t v : {b, c, d}) {
    s ^= v + 0x9E3779B97F4A7C15ull + (s << 6) + (s >> 2);
    SplitMix(s);
  }
  return s;
}

// Fisher-Yates with a portable generator: the same order on every machine and compiler.
template <typename T>
void Permute(std::vector<T>& v, uint64_t seed) {
  uint64_t state = seed;
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(SplitMix(state) % i);
    std::swap(v[i - 1], v[j]);
  }
}

struct ChunkRef {
  uint32_t shard;
  uint32_t index;  // chunk number within its shard
  uint64_t first_record;
  uint64_t records;
};

struct EpochPlan {
  uint64_t epoch = ~0ull;
  std::vector<uint32_t> chunks;      // this rank's chunk ids, in reading order
  std::vector<uint64_t> group_start; // stream offset (records) of each group, + total
  uint64_t batches = 0;
};

struct Group {
  int64_t id = -1;
  std::vector<std::unique_ptr<PendingRead>> reads;
  std::vector<uint32_t> chunks;
  std::vector<uint32_t> order;  // record permutation within the group
  std::vector<uint64_t> chunk_start;  // first record (in the group's buffer) of each chunk, + end
  bool ready = false;
};

}  // namespace

class DatasetLoader::Impl {
 public:
  Impl(std::shared_ptr<ObjectStore> store, DatasetIndex index, LoaderOptions o)
      : store_(std::move(store)), index_(std::move(index)), o_(o), rb_(index_.layout.RecordBytes()) {
    for (uint32_t s = 0; s < index_.shards.size(); ++s) {
      const ShardInfo& sh = index_.shards[s];
      for (uint32_t c = 0; c * index_.chunk_records < sh.records; ++c) {
        uint64_t first = c * index_.chunk_records;
        chunks_.push_back({s, c, first, std::min(index_.chunk_records, sh.records - first)});
      }
    }
    // Every epoch gives each rank floor(C / W) or ceil(C / W) of the C chunks, so the smallest
    // floor(C / W) chunks bound what any rank gets in any epoch: the batch count is the same
    // in every epoch (a later epoch cannot come up short) and on every rank.
    std::vector<uint64_t> sizes;
    for (const ChunkRef& c : chunks_) sizes.push_back(c.records);
    std::sort(sizes.begin(), sizes.end());
    const size_t floor_share = sizes.size() / static_cast<size_t>(o_.world);
    for (size_t i = 0; i < floor_share; ++i) min_rank_records_ += sizes[i];
    group_bufs_.resize(o_.group_buffers);
    for (auto& b : group_bufs_) b.resize(o_.group_chunks * index_.chunk_records * rb_);
    slots_.resize(o_.prefetch_batches);
    for (auto& s : slots_) s.resize(batch_bytes());
    slot_origin_.assign(o_.prefetch_batches, std::vector<RecordRef>(o_.batch));
    last_origin_.resize(o_.batch);
  }
  ~Impl() { Stop(); }

  uint64_t batch_bytes() const { return static_cast<uint64_t>(o_.batch) * rb_; }
  const DatasetIndex& index() const { return index_; }
  EpochPlan Plan(uint64_t epoch) const;
  // The same in every epoch (see min_rank_records_): no plan needed.
  uint64_t BatchesInEpoch(uint64_t /*epoch*/) const { return min_rank_records_ / o_.batch; }
  uint64_t min_rank_records() const { return min_rank_records_; }
  Status Next(std::span<std::byte> dst);
  LoaderPosition position() const {
    std::lock_guard<std::mutex> lock(mu_);
    return position_;
  }
  std::string RecordOrigin(size_t row) const {
    if (row >= last_origin_.size()) return store_->Describe();
    const RecordRef& r = last_origin_[row];
    return store_->Describe() + "/" + index_.shards[r.shard].key + " record " +
           std::to_string(r.record);
  }
  void Start(LoaderPosition pos);
  void Stop();
  double wait_seconds() const {
    std::lock_guard<std::mutex> lock(mu_);
    return wait_s_;
  }

 private:
  Status Produce(LoaderPosition pos);
  void SubmitGroup(const EpochPlan& plan, uint64_t epoch, int64_t g, Group& group);
  Status MakeReady(Group& group, uint64_t epoch, std::vector<std::byte>& buf);
  int AcquireSlot();  // -1 when stopping

  std::shared_ptr<ObjectStore> store_;
  DatasetIndex index_;
  LoaderOptions o_;
  uint64_t rb_;
  std::vector<ChunkRef> chunks_;
  uint64_t min_rank_records_ = 0;  // the fewest records any rank gets in any epoch
  std::vector<std::vector<std::byte>> group_bufs_;  // allocated once, reused
  std::vector<std::vector<std::byte>> slots_;       // prefetched batches
  struct RecordRef {
    uint32_t shard = 0;
    uint64_t record = 0;  // within the shard
  };
  std::vector<std::vector<RecordRef>> slot_origin_;  // per slot, per row
  std::vector<RecordRef> last_origin_;               // rows of the batch Next() returned last
  std::vector<Group> groups_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<int, LoaderPosition>> ready_;  // slot, position after it
  std::vector<int> free_;
  Status error_;
  bool stop_ = false;
  LoaderPosition position_;
  double wait_s_ = 0;
  std::thread thread_;
};

EpochPlan DatasetLoader::Impl::Plan(uint64_t epoch) const {
  EpochPlan plan;
  plan.epoch = epoch;
  std::vector<uint32_t> all(chunks_.size());
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = i;
  if (o_.shuffle) Permute(all, MixSeed(o_.seed, epoch));
  for (size_t i = 0; i < all.size(); ++i) {
    if (static_cast<int>(i % o_.world) == o_.rank) plan.chunks.push_back(all[i]);
  }
  plan.batches = BatchesInEpoch(epoch);
  uint64_t off = 0;
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    if (i % o_.group_chunks == 0) plan.group_start.push_back(off);
    off += chunks_[plan.chunks[i]].records;
  }
  plan.group_start.push_back(off);
  return plan;
}

void DatasetLoader::Impl::SubmitGroup(const EpochPlan& plan, uint64_t epoch, int64_t g, Group& group) {
  group.id = g;
  group.ready = false;
  group.reads.clear();
  group.chunks.assign(plan.chunks.begin() + g * o_.group_chunks,
                      plan.chunks.begin() + std::min<size_t>((g + 1) * o_.group_chunks, plan.chunks.size()));
  auto& buf = group_bufs_[g % o_.group_buffers];
  uint64_t off = 0;
  group.chunk_start.clear();
  for (uint32_t id : group.chunks) {
    const ChunkRef& c = chunks_[id];
    const uint64_t bytes = c.records * rb_;
    group.chunk_start.push_back(off / rb_);
    group.reads.push_back(store_->GetAsync(index_.shards[c.shard].key, c.first_record * rb_,
                                           std::span<std::byte>(buf.data() + off, bytes)));
    off += bytes;
  }
  group.chunk_start.push_back(off / rb_);
  group.order.resize(off / rb_);
  for (uint32_t i = 0; i < group.order.size(); ++i) group.order[i] = i;
  if (o_.shuffle) Permute(group.order, MixSeed(o_.seed, epoch, o_.rank + 1, g));
}

Status DatasetLoader::Impl::MakeReady(Group& group, uint64_t epoch, std::vector<std::byte>& buf) {
  uint64_t off = 0;
  for (size_t i = 0; i < group.chunks.size(); ++i) {
    const ChunkRef& c = chunks_[group.chunks[i]];
    const ShardInfo& sh = index_.shards[c.shard];
    const uint64_t bytes = c.records * rb_;
    const std::string where = store_->Describe() + "/" + sh.key;
    auto got = group.reads[i]->Wait();
    if (!got.ok()) return Status(got.status()).Prepend("dataset shard " + where);
    if (*got != bytes) {
      return DataLossError("dataset shard " + where + " is shorter than its index says (chunk " +
                           std::to_string(c.index) + "); the shard is damaged: re-ingest");
    }
    if (Crc32c(std::span<const std::byte>(buf.data() + off, bytes)) != sh.chunk_crc[c.index]) {
      return DataLossError("dataset shard " + where + " chunk " + std::to_string(c.index) +
                           " (records " + std::to_string(c.first_record) + ".." +
                           std::to_string(c.first_record + c.records - 1) + ", epoch " +
                           std::to_string(epoch) + ") fails its CRC-32C; the shard is corrupt: "
                           "re-ingest it or run `gantry dataset verify`");
    }
    off += bytes;
  }
  group.reads.clear();
  group.ready = true;
  return OkStatus();
}

int DatasetLoader::Impl::AcquireSlot() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return stop_ || !free_.empty(); });
  if (stop_) return -1;
  int s = free_.back();
  free_.pop_back();
  return s;
}

Status DatasetLoader::Impl::Produce(LoaderPosition pos) {
  const int R = o_.group_buffers;
  for (uint64_t epoch = pos.epoch;; ++epoch, pos.batch = 0) {
    EpochPlan plan = Plan(epoch);
    if (plan.batches == 0) {
      return FailedPreconditionError("dataset " + store_->Describe() + " epoch " + std::to_string(epoch) +
                                     " gives rank " + std::to_string(o_.rank) + " less than one batch");
    }
    const int64_t groups = static_cast<int64_t>(plan.group_start.size()) - 1;
    uint64_t cursor = pos.batch * o_.batch;
    int64_t g = std::upper_bound(plan.group_start.begin(), plan.group_start.end(), cursor) -
                plan.group_start.begin() - 1;
    groups_.clear();
    groups_.resize(R);
    for (int64_t k = g; k < std::min(groups, g + R); ++k) SubmitGroup(plan, epoch, k, groups_[k % R]);
    for (uint64_t b = pos.batch; b < plan.batches; ++b) {
      int slot = AcquireSlot();
      if (slot < 0) return OkStatus();
      std::byte* out = slots_[slot].data();
      for (int i = 0; i < o_.batch; ++i, ++cursor) {
        while (cursor >= plan.group_start[g + 1]) {  // group done: reuse its buffer
          if (g + R < groups) SubmitGroup(plan, epoch, g + R, groups_[g % R]);
          ++g;
        }
        Group& grp = groups_[g % R];
        if (!grp.ready) GANTRY_RETURN_IF_ERROR(MakeReady(grp, epoch, group_bufs_[g % R]));
        uint32_t rec = grp.order[cursor - plan.group_start[g]];
        std::memcpy(out + i * rb_, group_bufs_[g % R].data() + rec * rb_, rb_);
        const size_t k = std::upper_bound(grp.chunk_start.begin(), grp.chunk_start.end(), rec) -
                         grp.chunk_start.begin() - 1;
        const ChunkRef& c = chunks_[grp.chunks[k]];
        slot_origin_[slot][i] = {c.shard, c.first_record + (rec - grp.chunk_start[k])};
      }
      std::lock_guard<std::mutex> lock(mu_);
      LoaderPosition after = b + 1 < plan.batches ? LoaderPosition{epoch, b + 1} : LoaderPosition{epoch + 1, 0};
      ready_.push_back({slot, after});
      cv_.notify_all();
    }
    groups_.clear();  // waits for reads still in flight before the buffers are reused
  }
}

void DatasetLoader::Impl::Start(LoaderPosition pos) {
  ready_.clear();
  free_.clear();
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) free_.push_back(i);
  error_ = OkStatus();
  stop_ = false;
  position_ = pos;
  thread_ = std::thread([this, pos] {
    Status st = Produce(pos);
    groups_.clear();
    std::lock_guard<std::mutex> lock(mu_);
    if (!st.ok()) error_ = st;
    cv_.notify_all();
  });
}

void DatasetLoader::Impl::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

Status DatasetLoader::Impl::Next(std::span<std::byte> dst) {
  if (dst.size() != batch_bytes()) {
    return InvalidArgumentError("loader: Next got a " + std::to_string(dst.size()) +
                                "-byte buffer; one batch is " + std::to_string(batch_bytes()) + " bytes");
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto t0 = std::chrono::steady_clock::now();
  cv_.wait(lock, [&] { return !ready_.empty() || !error_.ok(); });
  wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (ready_.empty()) return error_;
  auto [slot, after] = ready_.front();
  ready_.pop_front();
  lock.unlock();
  std::memcpy(dst.data(), slots_[slot].data(), dst.size());
  last_origin_ = slot_origin_[slot];  // same size: no allocation
  lock.lock();
  free_.push_back(slot);
  position_ = after;
  cv_.notify_all();
  return OkStatus();
}

std::string LoaderPosition::ToString() const {
  return std::to_string(epoch) + ":" + std::to_string(batch);
}

StatusOr<LoaderPosition> LoaderPosition::Parse(std::string_view text) {
  auto colon = text.find(':');
  LoaderPosition p;
  try {
    size_t used1 = 0, used2 = 0;
    if (colon == std::string_view::npos) throw std::invalid_argument("no colon");
    std::string a(text.substr(0, colon)), b(text.substr(colon + 1));
    p.epoch = std::stoull(a, &used1);
    p.batch = std::stoull(b, &used2);
    if (used1 != a.size() || used2 != b.size() || a[0] == '-' || b[0] == '-') throw std::invalid_argument("junk");
  } catch (const std::exception&) {
    return InvalidArgumentError("loader position '" + std::string(text) + "' is not EPOCH:BATCH (e.g. 2:150)");
  }
  return p;
}

DatasetLoader::DatasetLoader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DatasetLoader::~DatasetLoader() = default;

StatusOr<std::unique_ptr<DatasetLoader>> DatasetLoader::Open(std::string_view uri, LoaderOptions options) {
  GANTRY_ASSIGN_OR_RETURN(auto store, OpenObjectStore(uri));
  GANTRY_ASSIGN_OR_RETURN(DatasetIndex index, ReadDatasetIndex(*store));
  return Create(std::shared_ptr<ObjectStore>(std::move(store)), std::move(index), options);
}

StatusOr<std::unique_ptr<DatasetLoader>> DatasetLoader::Create(std::shared_ptr<ObjectStore> store,
                                                               DatasetIndex index, LoaderOptions o) {
  if (o.world < 1 || o.rank < 0 || o.rank >= o.world) {
    return InvalidArgumentError("loader: rank " + std::to_string(o.rank) + " is outside world " + std::to_string(o.world));
  }
  if (o.batch < 1 || o.prefetch_batches < 1 || o.group_chunks < 1 || o.group_buffers < 2) {
    return InvalidArgumentError("loader: batch, prefetch_batches, group_chunks must be >= 1 and group_buffers >= 2");
  }
  auto impl = std::make_unique<Impl>(std::move(store), std::move(index), o);
  if (impl->BatchesInEpoch(0) == 0) {
    const DatasetIndex& idx = impl->index();
    uint64_t chunks = 0;
    for (const auto& s : idx.shards) chunks += s.chunk_crc.size();
    return InvalidArgumentError(
        "loader: dataset has " + std::to_string(idx.TotalRecords()) + " records in " + std::to_string(chunks) +
        " chunks; split over " + std::to_string(o.world) + " ranks some rank gets less than one batch of " +
        std::to_string(o.batch) + " in some epoch (the smallest share is " +
        std::to_string(impl->min_rank_records()) + " records)" +
        ". Use a smaller batch or fewer ranks, or re-ingest with smaller chunks");
  }
  impl->Start({0, 0});
  return std::unique_ptr<DatasetLoader>(new DatasetLoader(std::move(impl)));
}

const DatasetIndex& DatasetLoader::index() const { return impl_->index(); }
uint64_t DatasetLoader::batch_bytes() const { return impl_->batch_bytes(); }
uint64_t DatasetLoader::BatchesInEpoch(uint64_t epoch) const { return impl_->BatchesInEpoch(epoch); }
Status DatasetLoader::Next(std::span<std::byte> dst) { return impl_->Next(dst); }
LoaderPosition DatasetLoader::position() const { return impl_->position(); }
std::string DatasetLoader::RecordOrigin(size_t row) const { return impl_->RecordOrigin(row); }
double DatasetLoader::wait_seconds() const { return impl_->wait_seconds(); }

Status DatasetLoader::Seek(LoaderPosition pos) {
  if (pos.batch >= impl_->BatchesInEpoch(pos.epoch)) pos = {pos.epoch + 1, 0};
  impl_->Stop();
  impl_->Start(pos);
  return OkStatus();
}

}  // namespace gantry::storage
