// Status / StatusOr and the GANTRY_RETURN_IF_ERROR / GANTRY_ASSIGN_OR_RETURN macros.
#include "base/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace gantry {
namespace {

Status FailIf(bool fail) { return fail ? NotFoundError("no such key 'x'") : OkStatus(); }

Status Chain(bool fail, int* reached) {
  GANTRY_RETURN_IF_ERROR(FailIf(fail));
  *reached = 1;
  return OkStatus();
}

StatusOr<int> Half(int v) {
  if (v % 2 != 0) return InvalidArgumentError("odd value " + std::to_string(v));
  return v / 2;
}

StatusOr<int> Quarter(int v) {
  GANTRY_ASSIGN_OR_RETURN(int h, Half(v));
  GANTRY_ASSIGN_OR_RETURN(auto q, Half(h));
  return q;
}

TEST(StatusTest, OkAndErrorBasics) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.ToString(), "OK");
  Status err = DataLossError("checksum mismatch in shard 3");
  EXPECT_FALSE(err.ok());
  EXPECT_EQ(err.code(), StatusCode::kDataLoss);
  EXPECT_EQ(err.ToString(), "DATA_LOSS: checksum mismatch in shard 3");
  err.Prepend("loading checkpoint");
  EXPECT_EQ(err.message(), "loading checkpoint: checksum mismatch in shard 3");
}

TEST(StatusTest, ReturnIfErrorStopsAndAddsLocation) {
  int reached = 0;
  Status s = Chain(true, &reached);
  EXPECT_EQ(reached, 0);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("no such key 'x'"), std::string::npos);
  EXPECT_NE(s.message().find("status_test.cc:"), std::string::npos) << s.message();
  EXPECT_TRUE(Chain(false, &reached).ok());
  EXPECT_EQ(reached, 1);
}

TEST(StatusTest, AssignOrReturn) {
  auto q = Quarter(12);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 3);
  auto bad = Quarter(6);  // 6 -> 3 -> odd
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("odd value 3"), std::string::npos);
}

TEST(StatusTest, StatusOrHoldsMoveOnlyValues) {
  StatusOr<std::unique_ptr<int>> v = std::make_unique<int>(7);
  ASSERT_TRUE(v.ok());
  std::unique_ptr<int> p = std::move(v).value();
  EXPECT_EQ(*p, 7);
}

TEST(StatusTest, ErrnoErrorNamesTheCall) {
  Status s = ErrnoError("open '/nope'", ENOENT);
  EXPECT_EQ(s.code(), StatusCode::kSystemError);
  EXPECT_NE(s.message().find("open '/nope'"), std::string::npos);
  EXPECT_NE(s.message().find("errno 2"), std::string::npos);
}

TEST(StatusTest, EveryCodeHasAName) {
  for (int c = 0; c <= int(StatusCode::kDeviceError); ++c) {
    EXPECT_NE(StatusCodeName(StatusCode(c)), "UNKNOWN") << c;
  }
}

}  // namespace
}  // namespace gantry
