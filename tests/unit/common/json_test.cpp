// Parsing untrusted JSON with limits.
#include "aula/common/json.hpp"

#include <gtest/gtest.h>

namespace aula::json {
namespace {

TEST(JsonTest, ParsesObjects) {
  auto j = parse(R"({"name":"lab-1","vcpus":2,"persistent":true})");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(*getString(*j, "name"), "lab-1");
  EXPECT_EQ(*getInt(*j, "vcpus"), 2);
  EXPECT_TRUE(*getBool(*j, "persistent"));
}

TEST(JsonTest, RefusesTooLarge) {
  std::string big = "\"" + std::string(2000, 'a') + "\"";
  auto j = parse(big, {.maxBytes = 1000});
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(j.error().message(), "The JSON document is 2002 bytes, over the limit of 1000 bytes.");
}

TEST(JsonTest, RefusesTooDeep) {
  std::string deep(100, '[');
  deep += std::string(100, ']');
  auto j = parse(deep, {.maxDepth = 32});
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.error().message(), "The JSON document nests deeper than 32 levels.");
  EXPECT_TRUE(parse("[[[[1]]]]", {.maxDepth = 32}).ok());
}

TEST(JsonTest, RefusesGarbageWithOffset) {
  auto j = parse("{\"a\": tru}");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.error().code(), Errc::kParse);
  EXPECT_NE(j.error().message().find("error at byte"), std::string::npos);
}

TEST(JsonTest, FieldErrorsNameTheField) {
  auto j = *parse(R"({"vcpus":"two"})");
  EXPECT_EQ(getInt(j, "vcpus").error().message(), "The field 'vcpus' must be an integer.");
  EXPECT_EQ(getString(j, "name").error().message(), "The field 'name' is missing.");
}

TEST(JsonTest, UnknownFieldsAreRefused) {
  auto j = *parse(R"({"name":"x","colour":"red"})");
  auto s = checkFields(j, {"name", "vcpus"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "The field 'colour' is not known here; allowed fields: name, vcpus.");
  EXPECT_FALSE(checkFields(*parse("[1]"), {"name"}).ok());
}

}  // namespace
}  // namespace aula::json
