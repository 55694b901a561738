// Files: the fd owner, reading whole files, and atomic private writes whose
// mode is right from the first byte and whose failures leave the old file.
#include "aula/common/file.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/temp_dir.hpp"

namespace aula::file {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

mode_t modeOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0);
  return st.st_mode & 07777;
}

TEST(UniqueFdTest, ClosesItsDescriptorOnceWhenItGoesOrIsMoved) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): what a move leaves is the point
    EXPECT_EQ(b.get(), raw);
    EXPECT_NE(::fcntl(raw, F_GETFD), -1);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1) << "the descriptor outlived its owner";
}

TEST(ReadFileTest, ReadsTheWholeFileAndNamesWhatIsMissing) {
  test::TempDir dir;
  std::string big(100000, 'x');
  test::writeFile(dir / "big", big);
  auto text = readFile(dir / "big");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, big);

  auto missing = readFile(dir / "ca.crt", "broker CA");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  EXPECT_THAT(missing.error().message(), HasSubstr("Cannot read the broker CA '"));
  EXPECT_THAT(missing.error().message(), HasSubstr("No such file or directory"));
}

TEST(WriteFileAtomicTest, APrivateFileIsNeverWiderThanItsModeWhateverTheUmask) {
  test::TempDir dir;
  mode_t old = ::umask(0);  // the widest umask: the mode alone must keep it private
  auto written = writeFileAtomic(dir / "broker.key", "secret", {.mode = 0600});
  ::umask(old);
  ASSERT_TRUE(written.ok()) << written.error().message();
  EXPECT_EQ(modeOf(dir / "broker.key"), 0600u);
  EXPECT_EQ(test::readFile(dir / "broker.key"), "secret");
}

TEST(WriteFileAtomicTest, ReplacesTheOldFileWholeAndLeavesNoTemporaryFile) {
  test::TempDir dir;
  test::writeFile(dir / "agent.toml", "old");
  ::chmod((dir / "agent.toml").c_str(), 0644);
  ASSERT_TRUE(writeFileAtomic(dir / "agent.toml", "new", {.mode = 0640}).ok());
  EXPECT_EQ(test::readFile(dir / "agent.toml"), "new");
  EXPECT_EQ(modeOf(dir / "agent.toml"), 0640u);
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path()))
    ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(WriteFileAtomicTest, AFailedWriteKeepsTheOldFileAndSaysWhy) {
  test::TempDir dir;
  fs::create_directories(dir / "ro");
  test::writeFile(dir / "ro" / "keep", "old");
  ::chmod((dir / "ro").c_str(), 0500);
  auto written = writeFileAtomic(dir / "ro" / "keep", "new");
  ::chmod((dir / "ro").c_str(), 0700);
  if (::geteuid() == 0) {
    // root writes into a 0500 folder anyway; the other failure: a folder
    // that does not exist.
    auto none = writeFileAtomic(dir / "missing" / "file", "x");
    ASSERT_FALSE(none.ok());
    EXPECT_THAT(none.error().message(), HasSubstr("missing/file"));
    return;
  }
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), Errc::kIo);
  EXPECT_EQ(test::readFile(dir / "ro" / "keep"), "old");
}

TEST(WriteFileAtomicTest, NeverWritesThroughALinkPlacedAtTheTemporaryName) {
  // The temporary file is created with O_EXCL: a prepared link makes the
  // write fail instead of writing elsewhere. The name is not guessable in
  // advance, so this checks the target stays untouched across many writes.
  test::TempDir dir;
  test::writeFile(dir / "target", "untouched");
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(writeFileAtomic(dir / "file", std::to_string(i)).ok());
  EXPECT_EQ(test::readFile(dir / "target"), "untouched");
  EXPECT_EQ(test::readFile(dir / "file"), "19");
}

}  // namespace
}  // namespace aula::file
