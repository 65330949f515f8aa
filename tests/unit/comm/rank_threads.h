// RunRanks: a communicator test with ranks as threads of this process over a MemoryStore.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/factory.h"

namespace gantry::comm::testing {

// Runs fn(comm) on `world` threads, each with its own communicator of `backend`; `configure`
// may adjust the options first (same on every rank). The ranks bootstrap over `store` (a new
// MemoryStore when null).
inline void RunRanks(const std::string& backend, int world, std::chrono::milliseconds timeout,
                     const std::function<void(Communicator&)>& fn,
                     const std::function<void(CommOptions&)>& configure = {},
                     std::shared_ptr<Store> store = nullptr) {
  if (!store) store = std::make_shared<MemoryStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      Bootstrap boot(r, world, store);
      CommOptions o;
      o.backend = backend;
      o.timeout = timeout;
      if (configure) configure(o);
      auto c = CreateCommunicator(o, boot);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      fn(**c);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace gantry::comm::testing
