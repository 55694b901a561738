// Result<T>, Error and AULA_TRY.
#include "aula/common/result.hpp"

#include <gtest/gtest.h>

namespace aula {
namespace {

Result<int> parsePositive(int v) {
  if (v <= 0)
    return makeError(Errc::kInvalidArgument, "The number {} is not positive.", v);
  return v;
}

Result<int> doubled(int v) {
  int x = AULA_TRY(parsePositive(v));
  return 2 * x;
}

Status check(int v) {
  AULA_TRY_STATUS(doubled(v));
  return {};
}

TEST(ResultTest, CarriesValueOrError) {
  auto good = parsePositive(3);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  auto bad = parsePositive(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(bad.error().message(), "The number -1 is not positive.");
  EXPECT_EQ(bad.valueOr(7), 7);
}

TEST(ResultTest, TryPropagatesTheFirstError) {
  EXPECT_EQ(*doubled(4), 8);
  auto r = doubled(0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "The number 0 is not positive.");
  EXPECT_TRUE(check(1).ok());
  EXPECT_EQ(check(-2).error().code(), Errc::kInvalidArgument);
}

TEST(ResultTest, ContextPutsASentenceFirstAndKeepsCodes) {
  Error e(Errc::kIo, "The disk is full.", 28);
  Error c = e.context("Cannot save the template.");
  EXPECT_EQ(c.message(), "Cannot save the template. The disk is full.");
  EXPECT_EQ(c.code(), Errc::kIo);
  EXPECT_EQ(c.native(), 28);
}

TEST(ResultTest, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r(std::make_unique<int>(5));
  ASSERT_TRUE(r.ok());
  auto p = std::move(r).value();
  EXPECT_EQ(*p, 5);
}

TEST(ResultTest, ErrcNamesAreStable) {
  EXPECT_EQ(errcName(Errc::kNotFound), "not_found");
  EXPECT_EQ(errcName(Errc::kRateLimited), "rate_limited");
  EXPECT_EQ(errcName(Errc::kQuotaExceeded), "quota_exceeded");
}

}  // namespace
}  // namespace aula
