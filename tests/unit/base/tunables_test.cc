// Tunables: GANTRY_<NAME> overrides, strict parsing with fallback to the default.
#include "base/tunables.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

namespace gantry {
namespace {

TEST(TunablesTest, EnvironmentOverridesDefault) {
  unsetenv("GANTRY_TEST_KNOB");
  EXPECT_EQ(TunableInt("TEST_KNOB", 7), 7);
  setenv("GANTRY_TEST_KNOB", "42", 1);
  EXPECT_EQ(TunableInt("TEST_KNOB", 7), 42);
  EXPECT_EQ(TunableInt("GANTRY_TEST_KNOB", 7), 42);  // prefix optional
  EXPECT_EQ(TunableDouble("TEST_KNOB", 1.5), 42.0);
  EXPECT_EQ(TunableString("TEST_KNOB", "x"), "42");
  unsetenv("GANTRY_TEST_KNOB");
}

TEST(TunablesTest, MalformedValuesFallBack) {
  setenv("GANTRY_TEST_BAD", "12abc", 1);
  EXPECT_EQ(TunableInt("TEST_BAD", 3), 3);
  EXPECT_EQ(TunableDouble("TEST_BAD", 0.5), 0.5);
  EXPECT_EQ(TunableBool("TEST_BAD", true), true);
  setenv("GANTRY_TEST_BAD", "off", 1);
  EXPECT_EQ(TunableBool("TEST_BAD", true), false);
  EXPECT_EQ(TunableAutoBool("TEST_BAD"), std::optional<bool>(false));
  setenv("GANTRY_TEST_BAD", "AUTO", 1);
  EXPECT_EQ(TunableAutoBool("TEST_BAD"), std::nullopt);
  setenv("GANTRY_TEST_BAD", "maybe", 1);
  EXPECT_EQ(TunableAutoBool("TEST_BAD"), std::nullopt);  // malformed: auto (and a warning)
  setenv("GANTRY_TEST_BAD", "inf", 1);
  EXPECT_EQ(TunableDouble("TEST_BAD", 0.5), 0.5);
  unsetenv("GANTRY_TEST_BAD");
}

TEST(TunablesTest, TableIsDocumentedAndUnique) {
  std::set<std::string> names;
  for (const auto& t : ListTunables()) {
    EXPECT_TRUE(names.insert(t.doc.name).second) << t.doc.name;
    EXPECT_GT(std::string(t.doc.doc).size(), 10u) << t.doc.name;
  }
  EXPECT_TRUE(names.count("LOG_LEVEL"));
  setenv("GANTRY_NUM_THREADS", "3", 1);
  for (const auto& t : ListTunables()) {
    if (std::string(t.doc.name) == "NUM_THREADS") EXPECT_EQ(t.env_value, "3");
  }
  unsetenv("GANTRY_NUM_THREADS");
}

}  // namespace
}  // namespace gantry
