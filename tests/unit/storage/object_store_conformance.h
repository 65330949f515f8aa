// The ObjectStore conformance suite: every backend instantiates it with a factory that
// returns a fresh, empty store (INSTANTIATE_TEST_SUITE_P(Name, ObjectStoreConformance, ...)).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "storage/object_store.h"

namespace gantry::storage::testing {

struct StoreFactory {
  std::string name;
  // Returns a fresh store (empty namespace), or nullptr + a reason to skip.
  std::function<std::unique_ptr<ObjectStore>(std::string* skip_reason)> make;
};

inline std::string PrintToString(const StoreFactory& f) { return f.name; }

class ObjectStoreConformance : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override;
  std::unique_ptr<ObjectStore> store_;
};

}  // namespace gantry::storage::testing
