// Test helpers for storage tests: fresh temp directories and the dev-Ceph URI from the
// environment that scripts/ceph-dev.sh prints (CEPH_CONF, GANTRY_CEPH_POOL, GANTRY_CEPH_ID,
// GANTRY_CEPH_KEYRING, GANTRY_CEPH_DIR). Ceph tests GTEST_SKIP when these are not set.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace gantry::storage::testing {

// A directory under $TMPDIR removed (recursively) when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
    std::string tmpl = base + "/gantry-storage-test-XXXXXX";
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string UniqueName(const std::string& stem) {
  static std::mt19937_64 rng(std::random_device{}() ^ ::getpid());
  return stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(rng() % 1000000000);
}

inline std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// True when a dev cluster's environment is present.
inline bool HaveCeph() { return !Env("CEPH_CONF").empty() && !Env("GANTRY_CEPH_POOL").empty(); }

// ceph://POOL/PREFIX?conf=..&id=..&keyring=..[&extra]
inline std::string CephUri(const std::string& prefix, const std::string& extra = "") {
  std::string uri = "ceph://" + Env("GANTRY_CEPH_POOL") + "/" + prefix + "?conf=" +
                    Env("CEPH_CONF");
  if (!Env("GANTRY_CEPH_ID").empty()) uri += "&id=" + Env("GANTRY_CEPH_ID");
  if (!Env("GANTRY_CEPH_KEYRING").empty()) uri += "&keyring=" + Env("GANTRY_CEPH_KEYRING");
  if (!extra.empty()) uri += "&" + extra;
  return uri;
}

#define GANTRY_SKIP_WITHOUT_CEPH()                                                          \
  do {                                                                                      \
    if (!::gantry::storage::testing::HaveCeph())                                            \
      GTEST_SKIP() << "no dev Ceph: run `eval $(scripts/ceph-dev.sh start DIR)` first";     \
  } while (0)

}  // namespace gantry::storage::testing
