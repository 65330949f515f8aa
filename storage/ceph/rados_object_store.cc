// RadosObjectStore: connect/open, put (striped), size, list, remove, compare-and-put.
// Reads are in rados_read.cc; errno mapping and retry policy in rados_status.cc.
#include "storage/ceph/rados_object_store.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace gantry::storage {
namespace {

constexpr const char* kLayoutXattr = "gantry.layout";
constexpr const char* kCasXattr = "gantry.cas";  // "=" + content for objects <= kMaxCasBytes
constexpr uint64_t kMaxCasBytes = 64 << 10;
constexpr std::string_view kStripeMarker = "/.gantry-stripe.";

ceph::bufferlist StaticConst(std::span<const std::byte> data) {
  ceph::bufferlist bl;
  if (!data.empty()) {
    // librados only reads it; the op completes before Put returns.
    bl.push_back(ceph::buffer::create_static(
        static_cast<unsigned>(data.size()),
        const_cast<char*>(reinterpret_cast<const char*>(data.data()))));
  }
  return bl;
}

ceph::bufferlist FromString(const std::string& s) {
  ceph::bufferlist bl;
  bl.append(s);
  return bl;
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

StatusOr<long long> ParseNumber(const StoreUri& uri, const std::string& key, long long fallback,
                                long long min) {
  auto it = uri.params.find(key);
  if (it == uri.params.end()) return fallback;
  char* end = nullptr;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0' || v < min) {
    return InvalidArgumentError("store URI " + uri.ToString() + ": " + key + "=" + it->second +
                                " is not an integer >= " + std::to_string(min));
  }
  return v;
}

// Implemented in rados_read.cc.
}  // namespace
StatusOr<bool> ParseRadosLayout(const std::map<std::string, ceph::bufferlist>& attrs,
                                const std::string& oid, RadosObjectStore::Layout* layout);

StatusOr<RadosOptions> RadosOptions::FromUri(const StoreUri& uri) {
  RadosOptions o;
  auto param = [&](const char* k) {
    auto it = uri.params.find(k);
    return it == uri.params.end() ? std::string() : it->second;
  };
  o.conf = param("conf").empty() ? EnvOr("CEPH_CONF", "/etc/ceph/ceph.conf") : param("conf");
  o.id = param("id").empty() ? EnvOr("GANTRY_CEPH_ID", "admin") : param("id");
  if (o.id.starts_with("client.")) o.id = o.id.substr(7);
  o.keyring = param("keyring").empty() ? EnvOr("GANTRY_CEPH_KEYRING", "") : param("keyring");
  GANTRY_ASSIGN_OR_RETURN(long long t, ParseNumber(uri, "timeout_s", o.timeout_s, 1));
  GANTRY_ASSIGN_OR_RETURN(long long r, ParseNumber(uri, "retries", o.retries, 0));
  GANTRY_ASSIGN_OR_RETURN(long long s, ParseNumber(uri, "stripe_bytes", o.stripe_bytes, 4096));
  GANTRY_ASSIGN_OR_RETURN(long long n, ParseNumber(uri, "inflight", o.inflight, 1));
  o.timeout_s = static_cast<int>(t);
  o.retries = static_cast<int>(r);
  o.stripe_bytes = static_cast<uint64_t>(std::min<long long>(s, 1ll << 30));
  o.inflight = static_cast<int>(std::min<long long>(n, 1024));
  return o;
}

RadosObjectStore::RadosObjectStore(RadosOptions options, std::string pool, std::string prefix)
    : options_(std::move(options)), pool_(std::move(pool)), prefix_(std::move(prefix)),
      slots_(options_.inflight) {}

RadosObjectStore::~RadosObjectStore() {
  io_.close();
  cluster_.shutdown();
}

std::string RadosObjectStore::Describe() const {
  std::string out = "ceph://" + pool_;
  if (!prefix_.empty()) out += "/" + prefix_.substr(0, prefix_.size() - 1);
  return out;
}

std::string RadosObjectStore::StripeOid(std::string_view key, uint64_t i) const {
  return Oid(key) + std::string(kStripeMarker) + std::to_string(i);
}

librados::AioCompletion* RadosObjectStore::NewCompletion() {
  slots_.acquire();
  return librados::Rados::aio_create_completion(
      this, [](librados::completion_t, void* arg) {
        static_cast<RadosObjectStore*>(arg)->slots_.release();
      });
}

StatusOr<std::unique_ptr<RadosObjectStore>> RadosObjectStore::Open(const StoreUri& uri) {
  GANTRY_ASSIGN_OR_RETURN(RadosOptions options, RadosOptions::FromUri(uri));
  std::unique_ptr<RadosObjectStore> store(new RadosObjectStore(options, uri.pool, uri.prefix));
  GANTRY_RETURN_IF_ERROR(store->Connect());
  return store;
}

Status RadosObjectStore::Connect() {
  const std::string who = "client." + options_.id;
  const std::string where = " (conf " + options_.conf + ", pool '" + pool_ + "')";
  int r = cluster_.init2(who.c_str(), "ceph", 0);
  if (r < 0) return InvalidArgumentError("ceph: cannot create a client for " + who + ": " + std::strerror(-r));
  r = cluster_.conf_read_file(options_.conf.c_str());
  if (r < 0) {
    return InvalidArgumentError("ceph: cannot read config " + options_.conf + ": " +
                                std::strerror(-r) + "; pass conf= in the URI or set CEPH_CONF");
  }
  const std::string t = std::to_string(options_.timeout_s);
  for (const char* opt : {"rados_osd_op_timeout", "rados_mon_op_timeout", "client_mount_timeout"}) {
    cluster_.conf_set(opt, t.c_str());
  }
  if (!options_.keyring.empty()) cluster_.conf_set("keyring", options_.keyring.c_str());
  r = cluster_.connect();
  if (r == -EACCES || r == -EPERM) {
    return UnauthenticatedError("ceph: authentication as " + who + " failed" + where +
                                ", keyring '" + options_.keyring + "': the key is wrong or "
                                "unknown to the cluster; check the keyring");
  }
  if (r == -ENOENT) {
    return InvalidArgumentError("ceph: no keyring with a key for " + who + where +
                                "; pass keyring= in the URI or set GANTRY_CEPH_KEYRING");
  }
  if (r == -ETIMEDOUT || r == -ENOTCONN) {
    return DeadlineExceededError("ceph: no monitor answered within " + t + " s" + where +
                                 "; is the cluster up? (scripts/ceph-dev.sh start DIR)");
  }
  if (r < 0) return Status(StatusCode::kUnavailable, "ceph: connect as " + who + where + " failed: " + std::strerror(-r));
  r = cluster_.ioctx_create(pool_.c_str(), io_);
  if (r == -ENOENT) {
    return NotFoundError("ceph: pool '" + pool_ + "' does not exist" + where +
                         "; create it with `ceph osd pool create " + pool_ + "`");
  }
  if (r < 0) return Error(r, "open pool", "");
  return OkStatus();
}

StatusOr<RadosObjectStore::Layout> RadosObjectStore::ReadLayout(std::string_view key) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  Layout layout;
  uint64_t size = 0;
  std::map<std::string, ceph::bufferlist> attrs;
  int r = WithRetries([&] {
    attrs.clear();
    librados::ObjectReadOperation op;
    op.stat(&size, nullptr, nullptr);
    op.getxattrs(&attrs, nullptr);
    return io_.operate(Oid(key), &op, nullptr);
  });
  if (r < 0) return Error(r, "stat", key);
  GANTRY_ASSIGN_OR_RETURN(bool striped, ParseRadosLayout(attrs, Oid(key), &layout));
  if (!striped) layout = {size, 0, 1};
  return layout;
}

StatusOr<uint64_t> RadosObjectStore::Size(std::string_view key) {
  GANTRY_ASSIGN_OR_RETURN(Layout layout, ReadLayout(key));
  return layout.size;
}

Status RadosObjectStore::PutStripes(std::string_view key, std::span<const std::byte> data,
                                    uint64_t stripes) {
  struct Piece {
    ceph::bufferlist bl;
    librados::AioCompletion* c = nullptr;
  };
  std::vector<Piece> pieces(stripes);
  auto chunk = [&](uint64_t i) {
    uint64_t off = i * options_.stripe_bytes;
    return data.subspan(off, std::min<uint64_t>(options_.stripe_bytes, data.size() - off));
  };
  for (uint64_t i = 1; i < stripes; ++i) {
    pieces[i].bl = StaticConst(chunk(i));
    pieces[i].c = NewCompletion();
    if (io_.aio_write_full(StripeOid(key, i), pieces[i].c, pieces[i].bl) < 0) {
      ReleaseSlot();
      pieces[i].c->release();
      pieces[i].c = nullptr;  // retried synchronously below
    }
  }
  Status result;
  for (uint64_t i = 1; i < stripes; ++i) {
    int r = -EAGAIN;
    if (pieces[i].c) {
      pieces[i].c->wait_for_complete();
      r = pieces[i].c->get_return_value();
      pieces[i].c->release();
    }
    if (r < 0 && IsTransientRadosError(-r)) {
      r = WithRetries([&] {
        ceph::bufferlist bl = StaticConst(chunk(i));  // write_full claims its bufferlist
        return io_.write_full(StripeOid(key, i), bl);
      });
    }
    if (r < 0 && result.ok()) result = Error(r, "write stripe " + std::to_string(i), key);
  }
  return result;
}

Status RadosObjectStore::Put(std::string_view key, std::span<const std::byte> data) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  auto old = ReadLayout(key);
  // A damaged layout is what "put it again" is for: overwrite, then clear stripes past the new
  // count until one is missing (their number is unknown).
  const bool damaged = old.status().code() == StatusCode::kDataLoss;
  if (!old.ok() && old.status().code() != StatusCode::kNotFound && !damaged) return old.status();
  const uint64_t stripe = options_.stripe_bytes;
  const uint64_t stripes = data.size() <= stripe ? 1 : (data.size() + stripe - 1) / stripe;
  if (stripes > 1) GANTRY_RETURN_IF_ERROR(PutStripes(key, data, stripes));
  const std::string layout = "v1 " + std::to_string(data.size()) + " " +
                             std::to_string(stripes > 1 ? stripe : 0) + " " + std::to_string(stripes);
  std::string cas = "!";
  if (data.size() <= kMaxCasBytes) cas = "=" + std::string(reinterpret_cast<const char*>(data.data()), data.size());
  int r = WithRetries([&] {
    librados::ObjectWriteOperation op;  // built per attempt: operate() consumes it
    op.write_full(StaticConst(data.first(std::min<uint64_t>(data.size(), stripe))));
    op.setxattr(kLayoutXattr, FromString(layout));
    op.setxattr(kCasXattr, FromString(cas));
    return io_.operate(Oid(key), &op);
  });
  if (r < 0) return Error(r, "put " + std::to_string(data.size()) + " bytes", key);
  for (uint64_t i = stripes; old.ok() && i < old->stripes; ++i) {
    io_.remove(StripeOid(key, i));  // stale stripes of a bigger old version; best effort
  }
  for (uint64_t i = std::max<uint64_t>(stripes, 1); damaged; ++i) {
    if (io_.remove(StripeOid(key, i)) == -ENOENT) break;
  }
  return OkStatus();
}

StatusOr<std::vector<std::string>> RadosObjectStore::List(std::string_view prefix) {
  const std::string full = prefix_ + std::string(prefix);
  for (int attempt = 0;; ++attempt) {
    std::vector<std::string> keys;
    try {
      for (auto it = io_.nobjects_begin(); it != io_.nobjects_end(); ++it) {
        const std::string& oid = it->get_oid();
        if (!oid.starts_with(full) || oid.find(kStripeMarker) != std::string::npos) continue;
        keys.push_back(oid.substr(prefix_.size()));
      }
    } catch (const std::system_error& e) {
      int err = e.code().value();
      if (IsTransientRadosError(err) && attempt < options_.retries) {
        RadosBackoff(attempt);
        continue;
      }
      return Error(err, "list prefix", prefix);
    } catch (const std::exception& e) {
      return Status(StatusCode::kSystemError, "ceph pool '" + pool_ + "': list '" + full +
                                                  "' failed: " + e.what());
    }
    std::sort(keys.begin(), keys.end());
    return keys;
  }
}

Status RadosObjectStore::Remove(std::string_view key) {
  StatusOr<Layout> layout = ReadLayout(key);
  // A damaged layout must not make the object impossible to remove: its stripes are then
  // removed in order until the first one that does not exist.
  const bool damaged = layout.status().code() == StatusCode::kDataLoss;
  if (!layout.ok() && !damaged) return layout.status();
  int r = WithRetries([&] { return io_.remove(Oid(key)); });  // head first: gone atomically
  if (r < 0) return Error(r, "remove", key);
  for (uint64_t i = 1; damaged || i < layout->stripes; ++i) {
    r = WithRetries([&] { return io_.remove(StripeOid(key, i)); });
    if (damaged && r == -ENOENT) break;
    if (r < 0 && r != -ENOENT) return Error(r, "remove stripe " + std::to_string(i), key);
  }
  return OkStatus();
}

Status RadosObjectStore::CompareAndPut(std::string_view key,
                                       std::optional<std::string_view> expected,
                                       std::span<const std::byte> data) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  if (data.size() > kMaxCasBytes) {
    return InvalidArgumentError("ceph compare-and-put of '" + std::string(key) + "': " +
                                std::to_string(data.size()) + " bytes; pointer objects must be <= 64 KiB");
  }
  const std::string content(reinterpret_cast<const char*>(data.data()), data.size());
  const std::string layout = "v1 " + std::to_string(data.size()) + " 0 1";
  bool retried = false;
  int r = WithRetries([&] {
    librados::ObjectWriteOperation op;
    if (expected) op.cmpxattr(kCasXattr, LIBRADOS_CMPXATTR_OP_EQ, FromString("=" + std::string(*expected)));
    else op.create(true);
    op.write_full(FromString(content));
    op.setxattr(kLayoutXattr, FromString(layout));
    op.setxattr(kCasXattr, FromString("=" + content));
    int rc = io_.operate(Oid(key), &op);
    if (rc < 0 && IsTransientRadosError(-rc)) retried = true;
    return rc;
  });
  if (r == -ECANCELED || r == -EEXIST || r == -ENODATA || r == -ENOENT) {
    // A retry after a lost reply can find our own write in place: that is a win.
    if (retried) {
      auto now = GetAll(key);
      if (now.ok() && *now == content) return OkStatus();
    }
    return AbortedError(Describe() + ": compare-and-put of '" + std::string(key) +
                        "' lost: its content changed (another writer?); re-read and retry");
  }
  if (r < 0) return Error(r, "compare-and-put", key);
  return OkStatus();
}

}  // namespace gantry::storage
