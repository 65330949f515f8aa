// RadosObjectStore reads: one aio compound op (read + getxattrs) per GetAsync; the layout
// xattr that comes back says whether further stripes must be read. Data lands in the caller's
// buffer (static bufferlist) and is copied only when librados could not use that buffer.
#include <string>
#include <vector>

#include "storage/ceph/rados_object_store.h"

namespace gantry::storage {
namespace {
// GetAll returns one string: larger objects are read in ranges (GetAsync).
constexpr uint64_t kMaxGetAllBytes = 16ull << 30;

constexpr const char* kLayoutXattr = "gantry.layout";

// A submitted or unsubmitted completion; waits and releases on destruction.
class Aio {
 public:
  explicit Aio(librados::AioCompletion* c) : c_(c) {}
  ~Aio() {
    if (submitted_) c_->wait_for_complete();
    c_->release();
  }
  Aio(const Aio&) = delete;
  Aio& operator=(const Aio&) = delete;
  librados::AioCompletion* get() { return c_; }
  void MarkSubmitted() { submitted_ = true; }
  int Wait() {
    c_->wait_for_complete();
    return c_->get_return_value();
  }

 private:
  librados::AioCompletion* c_;
  bool submitted_ = false;
};

ceph::bufferlist StaticBuffer(std::span<std::byte> dst) {
  ceph::bufferlist bl;
  if (!dst.empty()) {
    bl.push_back(ceph::buffer::create_static(static_cast<unsigned>(dst.size()),
                                             reinterpret_cast<char*>(dst.data())));
  }
  return bl;
}

// Moves what librados returned into dst (a no-op when it used dst itself).
uint64_t Deliver(ceph::bufferlist& bl, std::span<std::byte> dst) {
  uint64_t n = std::min<uint64_t>(bl.length(), dst.size());
  if (n > 0 && !bl.is_provided_buffer(reinterpret_cast<const char*>(dst.data()))) {
    bl.begin().copy(static_cast<unsigned>(n), reinterpret_cast<char*>(dst.data()));
  }
  return n;
}

}  // namespace

// Parses "v1 SIZE STRIPE STRIPES": false for an object without the xattr (plain, one RADOS
// object); DataLoss, naming the object, for a layout that cannot be right (a damaged or foreign
// xattr), which would otherwise divide by a zero stripe or size a read from garbage.
StatusOr<bool> ParseRadosLayout(const std::map<std::string, ceph::bufferlist>& attrs,
                                const std::string& oid, RadosObjectStore::Layout* layout) {
  auto it = attrs.find(kLayoutXattr);
  if (it == attrs.end()) return false;
  const std::string s = it->second.to_str();
  unsigned long long size = 0, stripe = 0, stripes = 0;
  int used = 0;
  const bool parsed =
      std::sscanf(s.c_str(), "v1 %llu %llu %llu%n", &size, &stripe, &stripes, &used) == 3 &&
      static_cast<size_t>(used) == s.size();
  // One object: stripe 0. Striped: every stripe but the last is full and the last is not empty.
  const bool consistent =
      parsed && stripes >= 1 &&
      (stripes == 1 || (stripe > 0 && size > 0 && (size - 1) / stripe == stripes - 1));
  if (!consistent) {
    return DataLossError("ceph object '" + oid + "': its " + kLayoutXattr + " xattr '" +
                         s.substr(0, 80) +
                         "' is not a valid layout (expected 'v1 SIZE STRIPE STRIPES' with "
                         "STRIPES = ceil(SIZE / STRIPE)); the object is damaged, put it again");
  }
  *layout = {size, stripe, stripes};
  return true;
}

class RadosPendingRead final : public PendingRead {
 public:
  RadosPendingRead(RadosObjectStore* store, std::string key, uint64_t offset,
                   std::span<std::byte> dst)
      : store_(store), key_(std::move(key)), offset_(offset), dst_(dst) {
    Submit();
  }
  StatusOr<uint64_t> Wait() override {
    if (!result_) result_ = Finish();
    return *result_;
  }

 private:
  // Head attempt: read the range from the head object plus its xattrs, in one op.
  void Submit() {
    bl_ = StaticBuffer(dst_);
    attrs_.clear();
    aio_ = std::make_unique<Aio>(store_->NewCompletion());
    librados::ObjectReadOperation op;
    op.read(offset_, dst_.size(), &bl_, nullptr);
    op.getxattrs(&attrs_, nullptr);
    int r = store_->io().aio_operate(store_->Oid(key_), aio_->get(), &op, nullptr);
    if (r < 0) {
      submit_error_ = r;
      store_->ReleaseSlot();  // the callback that would release it never runs
    } else {
      aio_->MarkSubmitted();
    }
  }
  int WaitHead() {
    if (submit_error_ < 0) {
      int r = submit_error_;
      submit_error_ = 0;
      return r;
    }
    return aio_->Wait();
  }
  StatusOr<uint64_t> Finish();
  StatusOr<uint64_t> ReadStripes(const RadosObjectStore::Layout& layout, uint64_t head_bytes);

  RadosObjectStore* store_;
  std::string key_;
  uint64_t offset_;
  std::span<std::byte> dst_;
  ceph::bufferlist bl_;
  std::map<std::string, ceph::bufferlist> attrs_;
  std::unique_ptr<Aio> aio_;
  int submit_error_ = 0;
  std::optional<StatusOr<uint64_t>> result_;
};

StatusOr<uint64_t> RadosPendingRead::Finish() {
  int r = WaitHead();
  for (int i = 0; r < 0 && IsTransientRadosError(-r) && i < store_->options().retries; ++i) {
    RadosBackoff(i);
    Submit();
    r = WaitHead();
  }
  if (r < 0) return store_->Error(r, "read", key_);
  uint64_t head_bytes = Deliver(bl_, dst_);
  RadosObjectStore::Layout layout;
  GANTRY_ASSIGN_OR_RETURN(bool striped, ParseRadosLayout(attrs_, store_->Oid(key_), &layout));
  if (!striped || layout.stripes <= 1) return head_bytes;
  return ReadStripes(layout, head_bytes);
}

StatusOr<uint64_t> RadosPendingRead::ReadStripes(const RadosObjectStore::Layout& layout,
                                                 uint64_t head_bytes) {
  uint64_t end = std::min<uint64_t>(offset_ + dst_.size(), layout.size);
  if (offset_ >= end) return 0;
  struct Piece {
    uint64_t stripe, obj_off;
    std::span<std::byte> dst;
    ceph::bufferlist bl;
    std::unique_ptr<Aio> aio;
  };
  std::vector<Piece> pieces;
  for (uint64_t pos = std::max(offset_, layout.stripe); pos < end;) {
    uint64_t s = pos / layout.stripe;
    uint64_t stop = std::min(end, (s + 1) * layout.stripe);
    pieces.push_back({s, pos - s * layout.stripe, dst_.subspan(pos - offset_, stop - pos), {}, {}});
    pos = stop;
  }
  auto submit = [&](Piece& p) {
    p.bl = StaticBuffer(p.dst);
    p.aio = std::make_unique<Aio>(store_->NewCompletion());
    int r = store_->io().aio_read(store_->StripeOid(key_, p.stripe), p.aio->get(), &p.bl,
                                  p.dst.size(), p.obj_off);
    if (r == 0) p.aio->MarkSubmitted();
    else store_->ReleaseSlot();
    return r;
  };
  std::vector<int> submit_rc(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) submit_rc[i] = submit(pieces[i]);
  for (size_t i = 0; i < pieces.size(); ++i) {
    Piece& p = pieces[i];
    int r = submit_rc[i] < 0 ? submit_rc[i] : p.aio->Wait();
    for (int a = 0; r < 0 && IsTransientRadosError(-r) && a < store_->options().retries; ++a) {
      RadosBackoff(a);
      r = submit(p);
      if (r == 0) r = p.aio->Wait();
    }
    if (r < 0) return store_->Error(r, "read stripe " + std::to_string(p.stripe), key_);
    if (Deliver(p.bl, p.dst) != p.dst.size()) {
      return DataLossError("ceph key '" + store_->Oid(key_) + "': stripe " +
                           std::to_string(p.stripe) + " is shorter than its layout says; the "
                           "object is damaged, put it again");
    }
  }
  uint64_t head_part = offset_ < layout.stripe ? std::min(end, layout.stripe) - offset_ : 0;
  if (head_bytes != head_part) {
    return DataLossError("ceph key '" + store_->Oid(key_) + "': head stripe is short (" +
                         std::to_string(head_bytes) + " of " + std::to_string(head_part) +
                         " bytes); the object is damaged, put it again");
  }
  return end - offset_;
}

StatusOr<std::string> RadosObjectStore::GetAll(std::string_view key) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  ceph::bufferlist bl;
  std::map<std::string, ceph::bufferlist> attrs;
  int r = WithRetries([&] {
    bl.clear();
    attrs.clear();
    librados::ObjectReadOperation op;
    op.read(0, 0, &bl, nullptr);  // length 0: to the end of the object
    op.getxattrs(&attrs, nullptr);
    return io_.operate(Oid(key), &op, nullptr);
  });
  if (r < 0) return Error(r, "read", key);
  std::string out = bl.to_str();
  Layout layout;
  GANTRY_ASSIGN_OR_RETURN(bool striped, ParseRadosLayout(attrs, Oid(key), &layout));
  if (!striped || layout.stripes <= 1) return out;
  if (layout.size > kMaxGetAllBytes) {
    return ResourceExhaustedError("ceph object '" + Oid(key) + "' has " +
                                  std::to_string(layout.size) +
                                  " bytes, more than one GetAll reads; read it in ranges");
  }
  if (out.size() != layout.stripe) {
    return DataLossError("ceph key '" + Oid(key) + "': head stripe has " +
                         std::to_string(out.size()) + " bytes, layout says " +
                         std::to_string(layout.stripe) + "; the object is damaged, put it again");
  }
  out.resize(layout.size);
  auto rest = std::as_writable_bytes(std::span<char>(out)).subspan(layout.stripe);
  RadosPendingRead tail(this, std::string(key), layout.stripe, rest);
  GANTRY_ASSIGN_OR_RETURN(uint64_t got, tail.Wait());
  if (got != rest.size()) return DataLossError("ceph key '" + Oid(key) + "': stripes are short");
  return out;
}

std::unique_ptr<PendingRead> RadosObjectStore::GetAsync(std::string_view key, uint64_t offset,
                                                        std::span<std::byte> dst) {
  if (Status st = ValidateKey(key); !st.ok()) return std::make_unique<DoneRead>(st);
  if (dst.size() > (1ull << 31)) {
    return std::make_unique<DoneRead>(InvalidArgumentError(
        "ceph read of '" + std::string(key) + "': " + std::to_string(dst.size()) +
        " bytes in one call; split reads into <= 2 GiB"));
  }
  return std::make_unique<RadosPendingRead>(this, std::string(key), offset, dst);
}

}  // namespace gantry::storage
