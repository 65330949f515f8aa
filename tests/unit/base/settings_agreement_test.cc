// Shared settings across ranks: equal blobs agree; the first difference is named with the
// rank and both values; a setting one rank lacks, extra settings and unreadable blobs too.
#include "base/settings_agreement.h"

#include <gtest/gtest.h>

namespace gantry {
namespace {

TEST(SettingsAgreement, EqualSettingsAgree) {
  const std::string a = EncodeSettings({{"GANTRY_X", "1"}, {"name with = and spaces", "a=b c"}});
  EXPECT_TRUE(CompareSettings("test", {a, a, a}).ok());
  EXPECT_TRUE(CompareSettings("test", {a}).ok());
  EXPECT_TRUE(CompareSettings("test", {}).ok());
}

TEST(SettingsAgreement, TheFirstDifferenceIsNamedWithBothValues) {
  const std::string r0 = EncodeSettings({{"GANTRY_A", "1"}, {"GANTRY_B", "4096"}});
  const std::string r1 = r0;
  const std::string r2 = EncodeSettings({{"GANTRY_A", "1"}, {"GANTRY_B", "1024"}});
  const Status s = CompareSettings("shm communicator", {r0, r1, r2, r2});
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "shm communicator: rank 2 has GANTRY_B = 1024 but rank 0 has 4096; every rank must "
            "use the same GANTRY_B");
}

TEST(SettingsAgreement, MissingExtraAndUnreadableSettings) {
  const std::string r0 = EncodeSettings({{"GANTRY_A", "1"}, {"GANTRY_B", "2"}});
  Status s = CompareSettings("x", {r0, EncodeSettings({{"GANTRY_A", "1"}})});
  EXPECT_NE(s.message().find("rank 1 has GANTRY_B = (not set) but rank 0 has 2"),
            std::string::npos)
      << s.ToString();
  s = CompareSettings("x", {r0, r0 + EncodeSettings({{"GANTRY_C", "3"}})});
  EXPECT_NE(s.message().find("rank 1 has settings rank 0 does not know"), std::string::npos)
      << s.ToString();
  s = CompareSettings("x", {r0, "garbage"});
  EXPECT_NE(s.message().find("rank 1's settings are unreadable"), std::string::npos)
      << s.ToString();
  s = CompareSettings("x", {"garbage", r0});
  EXPECT_NE(s.message().find("rank 0's settings are unreadable"), std::string::npos)
      << s.ToString();
}

}  // namespace
}  // namespace gantry
