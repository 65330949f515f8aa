// ObjectStore conveniences, key rules, URI parsing and the backend factory.
#include "storage/object_store.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "gantry_config.h"
#include "storage/local/local_object_store.h"
#if GANTRY_WITH_CEPH
#include "storage/ceph/rados_object_store.h"
#endif

namespace gantry::storage {
namespace {

// "%2F" etc. in query values (keyring paths are usually plain, but be correct).
StatusOr<std::string> PercentDecode(std::string_view s, std::string_view uri) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(s[i + 1]) || !std::isxdigit(s[i + 2])) {
      return InvalidArgumentError("store URI '" + std::string(uri) +
                                  "': bad percent escape; write '%' as %25");
    }
    out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

StatusOr<StoreUri> ParseCephUri(std::string_view rest, std::string_view uri) {
  StoreUri u;
  u.scheme = "ceph";
  std::string_view query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  auto slash = rest.find('/');
  u.pool = std::string(rest.substr(0, slash));
  if (u.pool.empty()) {
    return InvalidArgumentError("store URI '" + std::string(uri) +
                                "' names no pool: write ceph://POOL/prefix");
  }
  if (slash != std::string_view::npos) {
    std::string prefix(rest.substr(slash + 1));
    while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
    if (!prefix.empty()) {
      GANTRY_RETURN_IF_ERROR(ValidateKey(prefix).Prepend("store URI '" + std::string(uri) + "'"));
      u.prefix = prefix + "/";
    }
  }
  static const std::set<std::string> kKnown = {"conf",    "id",           "keyring",
                                               "timeout_s", "retries",    "stripe_bytes",
                                               "inflight"};
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (kv.empty()) continue;
    auto eq = kv.find('=');
    std::string key(kv.substr(0, eq));
    if (!kKnown.count(key) || eq == std::string_view::npos) {
      return InvalidArgumentError("store URI '" + std::string(uri) + "': unknown or empty option '" +
                                  key + "'; known: conf, id, keyring, timeout_s, retries, "
                                  "stripe_bytes, inflight (as key=value)");
    }
    GANTRY_ASSIGN_OR_RETURN(u.params[key], PercentDecode(kv.substr(eq + 1), uri));
  }
  return u;
}

}  // namespace

StatusOr<std::string> ObjectStore::GetAll(std::string_view key) {
  GANTRY_ASSIGN_OR_RETURN(uint64_t size, Size(key));
  std::string out(size, '\0');
  GANTRY_ASSIGN_OR_RETURN(uint64_t got,
                          Get(key, 0, std::as_writable_bytes(std::span<char>(out))));
  if (got != size) {
    return DataLossError(Describe() + ": object '" + std::string(key) + "' shrank while read (" +
                         std::to_string(size) + " -> " + std::to_string(got) +
                         " bytes); another writer replaced it, retry");
  }
  return out;
}

StatusOr<bool> ObjectStore::Exists(std::string_view key) {
  auto size = Size(key);
  if (size.ok()) return true;
  if (size.status().code() == StatusCode::kNotFound) return false;
  return size.status();
}

Status ValidateKey(std::string_view key) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("object key '" + std::string(key) + "' is invalid: " +
                                std::string(why));
  };
  if (key.empty()) return bad("it is empty");
  if (key.size() > 1024) return bad("longer than 1024 bytes");
  if (key.find('\0') != std::string_view::npos) return bad("contains a NUL byte");
  if (key.front() == '/') return bad("starts with '/'; keys are relative to the store root");
  size_t start = 0;
  while (start <= key.size()) {
    size_t end = key.find('/', start);
    if (end == std::string_view::npos) end = key.size();
    std::string_view part = key.substr(start, end - start);
    if (part.empty()) return bad("has an empty path component ('//' or a trailing '/')");
    if (part == "." || part == "..") return bad("has a '.' or '..' component");
    if (part.starts_with(".gantry")) return bad("components starting with '.gantry' are reserved");
    start = end + 1;
  }
  return OkStatus();
}

std::string StoreUri::ToString() const {
  if (scheme == "file") return "file://" + path;
  std::string out = "ceph://" + pool;
  if (!prefix.empty()) out += "/" + prefix.substr(0, prefix.size() - 1);
  return out;
}

StatusOr<StoreUri> ParseStoreUri(std::string_view uri) {
  if (uri.empty()) return InvalidArgumentError("store URI is empty: give file:///dir or ceph://pool/prefix");
  if (uri.starts_with("ceph://")) return ParseCephUri(uri.substr(7), uri);
  std::string_view path = uri;
  if (uri.starts_with("file://")) {
    path = uri.substr(7);
  } else if (auto colon = uri.find("://"); colon != std::string_view::npos) {
    return InvalidArgumentError("store URI '" + std::string(uri) + "' has unknown scheme '" +
                                std::string(uri.substr(0, colon)) + "'; use file:// or ceph://");
  }
  if (path.empty()) return InvalidArgumentError("store URI '" + std::string(uri) + "' names no directory");
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(std::filesystem::path(path), ec);
  if (ec) return InvalidArgumentError("store URI '" + std::string(uri) + "': " + ec.message());
  StoreUri u;
  u.scheme = "file";
  u.path = abs.lexically_normal().string();
  while (u.path.size() > 1 && u.path.back() == '/') u.path.pop_back();
  return u;
}

StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(std::string_view uri) {
  GANTRY_ASSIGN_OR_RETURN(StoreUri u, ParseStoreUri(uri));
  if (u.scheme == "file") {
    GANTRY_ASSIGN_OR_RETURN(auto store, LocalObjectStore::Open(u.path));
    return std::unique_ptr<ObjectStore>(std::move(store));
  }
#if GANTRY_WITH_CEPH
  GANTRY_ASSIGN_OR_RETURN(auto store, RadosObjectStore::Open(u));
  return std::unique_ptr<ObjectStore>(std::move(store));
#else
  return UnimplementedError("store URI '" + u.ToString() +
                            "': this gantry was built without Ceph; install librados-dev and "
                            "libradospp-dev and rebuild with -DGANTRY_WITH_CEPH=ON");
#endif
}

}  // namespace gantry::storage
