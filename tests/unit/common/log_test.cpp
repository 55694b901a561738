// Log levels, sinks and the journal decision.
#include "aula/common/log.hpp"

#include <cstdio>
#include <vector>

#include <gtest/gtest.h>
#include <sys/stat.h>

namespace aula::log {
namespace {

struct Captured {
  Level level;
  std::string component;
  std::string message;
};

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setSink([this](Level l, std::string_view c, std::string_view m) {
      lines.push_back({l, std::string(c), std::string(m)});
    });
    setComponent("test");
    setLevel(Level::kInfo);
  }
  void TearDown() override {
    setSink(nullptr);
    setLevel(Level::kInfo);
  }
  std::vector<Captured> lines;
};

TEST_F(LogTest, FiltersBelowTheLevel) {
  debug("hidden {}", 1);
  info("shown {}", 2);
  warn("warned");
  error("failed {}", "badly");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].message, "shown 2");
  EXPECT_EQ(lines[0].component, "test");
  EXPECT_EQ(lines[2].level, Level::kError);
  EXPECT_EQ(lines[2].message, "failed badly");
}

TEST_F(LogTest, DebugShownWhenEnabled) {
  setLevel(Level::kDebug);
  debug("now visible");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].level, Level::kDebug);
}

TEST(LogLevelTest, ParsesNames) {
  EXPECT_EQ(parseLevel("DEBUG"), Level::kDebug);
  EXPECT_EQ(parseLevel("warning"), Level::kWarn);
  EXPECT_EQ(parseLevel("Error"), Level::kError);
  EXPECT_FALSE(parseLevel("loud").has_value());
  EXPECT_EQ(levelName(Level::kWarn), "warn");
}

TEST(LogJournalTest, JournalOnlyWhenTheStreamNamesThisFile) {
  FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  struct stat st {};
  ASSERT_EQ(fstat(fileno(file), &st), 0);
  std::string matching = fmt::format("{}:{}", st.st_dev, st.st_ino);
  EXPECT_TRUE(streamIsJournal(matching, fileno(file)));
  EXPECT_FALSE(streamIsJournal(fmt::format("{}:{}", st.st_dev, st.st_ino + 1), fileno(file)));
  EXPECT_FALSE(streamIsJournal("garbage", fileno(file)));
  (void)std::fclose(file);
}

}  // namespace
}  // namespace aula::log
