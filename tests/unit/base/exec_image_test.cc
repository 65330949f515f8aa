// ExecImage: argv/envp blocks for fork + exec, merged from this process's environment.
#include "base/exec_image.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace gantry {
namespace {

std::vector<std::string> Entries(char* const* block) {
  std::vector<std::string> out;
  for (; *block != nullptr; ++block) out.emplace_back(*block);
  return out;
}

int Count(const std::vector<std::string>& env, const std::string& prefix) {
  int n = 0;
  for (const auto& e : env) n += e.rfind(prefix, 0) == 0;
  return n;
}

TEST(ExecImage, ArgvIsNullTerminatedCopy) {
  ExecImage image({"/bin/echo", "a b", ""}, {});
  EXPECT_STREQ(image.program(), "/bin/echo");
  EXPECT_EQ(Entries(image.argv()), (std::vector<std::string>{"/bin/echo", "a b", ""}));
}

TEST(ExecImage, InheritsOverridesAndUnsets) {
  ::setenv("GANTRY_EXEC_KEEP", "1", 1);
  ::setenv("GANTRY_EXEC_REPLACE", "old", 1);
  ::setenv("GANTRY_EXEC_DROP", "x", 1);
  ExecImage image({"prog"}, {{"GANTRY_EXEC_REPLACE", "new"}, {"GANTRY_EXEC_ADD", "a=b"}},
                  {"GANTRY_EXEC_DROP"});
  const auto env = Entries(image.envp());
  EXPECT_EQ(Count(env, "GANTRY_EXEC_KEEP=1"), 1);
  EXPECT_EQ(Count(env, "GANTRY_EXEC_REPLACE="), 1);  // replaced, not duplicated
  EXPECT_EQ(Count(env, "GANTRY_EXEC_REPLACE=new"), 1);
  EXPECT_EQ(Count(env, "GANTRY_EXEC_ADD=a=b"), 1);
  EXPECT_EQ(Count(env, "GANTRY_EXEC_DROP="), 0);
  for (const char* n : {"GANTRY_EXEC_KEEP", "GANTRY_EXEC_REPLACE", "GANTRY_EXEC_DROP"}) {
    ::unsetenv(n);
  }
}

TEST(ExecImage, AnOverrideWinsOverAnUnsetOfTheSameName) {
  ::setenv("GANTRY_EXEC_BOTH", "old", 1);
  ExecImage image({"prog"}, {{"GANTRY_EXEC_BOTH", "new"}}, {"GANTRY_EXEC_BOTH"});
  EXPECT_EQ(Count(Entries(image.envp()), "GANTRY_EXEC_BOTH=new"), 1);
  EXPECT_EQ(Count(Entries(image.envp()), "GANTRY_EXEC_BOTH="), 1);
  ::unsetenv("GANTRY_EXEC_BOTH");
}

}  // namespace
}  // namespace gantry
