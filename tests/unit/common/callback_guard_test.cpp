// The guard around code C libraries call: an exception stops at the guard,
// is logged with where it happened, and the C side gets its fallback.
#include "aula/common/callback_guard.hpp"

#include <stdexcept>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/common/log.hpp"

namespace aula {
namespace {

using ::testing::HasSubstr;

// A C function pointer type, as libvirt or curl would hold it.
using CCallback = int (*)(void*);

int throwingCallback(void* opaque) noexcept {
  return guardCallback("test callback", -7, [&]() -> int {
    if (opaque == nullptr)
      throw std::runtime_error("bad opaque pointer");
    return 1;
  });
}

TEST(CallbackGuardTest, AnExceptionStopsAtTheGuardIsLoggedAndGivesTheFallback) {
  std::vector<std::string> lines;
  log::setSink([&](log::Level, std::string_view, std::string_view m) { lines.emplace_back(m); });
  CCallback c = &throwingCallback;
  int value = 0;
  EXPECT_EQ(c(&value), 1);
  EXPECT_EQ(c(nullptr), -7);
  log::setSink(nullptr);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("test callback"));
  EXPECT_THAT(lines[0], HasSubstr("bad opaque pointer"));
}

TEST(CallbackGuardTest, VoidCallbacksAreGuardedToo) {
  log::setSink([](log::Level, std::string_view, std::string_view) {});
  bool ran = false;
  guardCallback("void callback", [&] {
    ran = true;
    throw 42;  // not even a std::exception
  });
  log::setSink(nullptr);
  EXPECT_TRUE(ran);
}

}  // namespace
}  // namespace aula
