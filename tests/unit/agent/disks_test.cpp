// Desktop overlays: the exact qemu-img command, and paths from the broker
// that try to leave their storage folder.
#include "aula/agent/disks.hpp"

#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/temp_dir.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class DisksTest : public ::testing::Test {
 protected:
  DisksTest()
      : bases_(dir_ / "bases"),
        desktops_(dir_ / "desktops"),
        disks_({{"bases", bases_}, {"desktops", desktops_}}, runner_) {
    fs::create_directories(bases_ / "win");
    fs::create_directories(desktops_);
    test::writeFile(bases_ / "win" / "base.qcow2", "qcow2");
  }

  test::TempDir dir_;
  fs::path bases_;
  fs::path desktops_;
  process::RecordingRunner runner_;
  Disks disks_;
};

TEST_F(DisksTest, CreatesAnOverlayWithQemuImgAndItsFolders) {
  auto overlay = disks_.createOverlay("bases", "win/base.qcow2", "desktops", "room1/aula-7.qcow2");
  ASSERT_TRUE(overlay.ok()) << overlay.error().message();
  EXPECT_EQ(*overlay, desktops_ / "room1" / "aula-7.qcow2");
  EXPECT_TRUE(fs::is_directory(desktops_ / "room1"));
  auto commands = runner_.commands();
  ASSERT_EQ(commands.size(), 1U);
  EXPECT_THAT(commands[0].argv, ElementsAre("qemu-img", "create", "-q", "-f", "qcow2", "-b",
                                            (bases_ / "win" / "base.qcow2").native(), "-F", "qcow2",
                                            (desktops_ / "room1" / "aula-7.qcow2").native()));
}

TEST_F(DisksTest, RefusesPathsThatLeaveTheStorage) {
  struct Case {
    std::string rel;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"../bases/win/base.qcow2", "must not contain '..'"},
      {"room1/../../x.qcow2", "must not contain '..'"},
      {"/etc/shadow", "must be relative"},
      {"", "must be relative"},
      {".", "does not name a file inside"},
  };
  for (const auto& c : cases) {
    auto result = disks_.createOverlay("bases", "win/base.qcow2", "desktops", c.rel);
    ASSERT_FALSE(result.ok()) << c.rel;
    EXPECT_EQ(result.error().code(), Errc::kInvalidArgument) << c.rel;
    EXPECT_THAT(result.error().message(), HasSubstr(c.says)) << c.rel;
    EXPECT_THAT(result.error().message(), HasSubstr("storage 'desktops'")) << c.rel;
  }
  EXPECT_TRUE(runner_.commands().empty());
}

TEST_F(DisksTest, RefusesASymbolicLinkOutOfTheStorage) {
  fs::create_directories(dir_ / "elsewhere");
  fs::create_directory_symlink(dir_ / "elsewhere", desktops_ / "escape");
  auto result = disks_.createOverlay("bases", "win/base.qcow2", "desktops", "escape/x.qcow2");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kInvalidArgument);
  EXPECT_THAT(result.error().message(), HasSubstr("through a symbolic link"));
  EXPECT_TRUE(runner_.commands().empty());
}

TEST_F(DisksTest, NamesAMissingStorageOrBase) {
  auto noStorage = disks_.createOverlay("nope", "win/base.qcow2", "desktops", "a.qcow2");
  ASSERT_FALSE(noStorage.ok());
  EXPECT_EQ(noStorage.error().code(), Errc::kNotFound);
  EXPECT_EQ(noStorage.error().message(), "The agent has no storage named 'nope'.");
  auto noBase = disks_.createOverlay("bases", "win/missing.qcow2", "desktops", "a.qcow2");
  ASSERT_FALSE(noBase.ok());
  EXPECT_EQ(noBase.error().code(), Errc::kNotFound);
  EXPECT_THAT(noBase.error().message(), HasSubstr((bases_ / "win" / "missing.qcow2").native()));
}

TEST_F(DisksTest, RefusesToOverwriteAnOverlay) {
  test::writeFile(desktops_ / "a.qcow2", "old");
  auto result = disks_.createOverlay("bases", "win/base.qcow2", "desktops", "a.qcow2");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kAlreadyExists);
  EXPECT_TRUE(runner_.commands().empty());
}

TEST_F(DisksTest, ReportsAFailingQemuImg) {
  process::RecordingRunner failing([](const process::Command&) -> Result<process::Outcome> {
    return process::Outcome{.exitCode = 1, .err = "qemu-img: disk full\n"};
  });
  Disks disks({{"bases", bases_}, {"desktops", desktops_}}, failing);
  auto result = disks.createOverlay("bases", "win/base.qcow2", "desktops", "a.qcow2");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kIo);
  EXPECT_THAT(result.error().message(),
              HasSubstr("Cannot create the overlay " + (desktops_ / "a.qcow2").native()));
}

TEST_F(DisksTest, ResetDeletesAndRecreates) {
  test::writeFile(desktops_ / "a.qcow2", "dirty");
  auto result = disks_.resetOverlay("bases", "win/base.qcow2", "desktops", "a.qcow2");
  ASSERT_TRUE(result.ok()) << result.error().message();
  // The recording runner does not create the file: it was deleted first.
  EXPECT_FALSE(fs::exists(desktops_ / "a.qcow2"));
  EXPECT_EQ(runner_.commands().size(), 1U);
  EXPECT_TRUE(disks_.deleteOverlay("desktops", "a.qcow2").ok());
}

}  // namespace
}  // namespace aula::agent
