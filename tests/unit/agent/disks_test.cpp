// Desktop overlays: the exact qemu-img command, and paths from the broker
// that try to leave their storage folder. Templates from desktops, the
// backing file read from qcow2 headers and the deletion of bases run the real
// qemu-img and qemu-io (qemu-utils) on small images.
#include "aula/agent/disks.hpp"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "support/temp_dir.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

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

TEST_F(DisksTest, RefusesATemplateThatExistsBeforeAnyWork) {
  test::writeFile(desktops_ / "a.qcow2", "desktop");
  fs::create_directories(bases_ / "tpl");
  test::writeFile(bases_ / "tpl" / "t.qcow2", "precious");
  for (auto mode : {TemplateMode::kFlatten, TemplateMode::kRebase}) {
    auto result = disks_.templateFromDesktop("desktops", "a.qcow2", "bases", "tpl/t.qcow2", mode);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code(), Errc::kAlreadyExists);
    EXPECT_EQ(result.error().message(), "The template image " +
                                            (bases_ / "tpl" / "t.qcow2").native() +
                                            " in storage 'bases' already exists.");
  }
  EXPECT_EQ(test::readFile(bases_ / "tpl" / "t.qcow2"), "precious");
  EXPECT_EQ(test::readFile(desktops_ / "a.qcow2"), "desktop");
  EXPECT_TRUE(runner_.commands().empty());
}

TEST_F(DisksTest, TemplateAndBaseOperationsStayInTheirStorage) {
  test::writeFile(desktops_ / "a.qcow2", "desktop");
  auto outOfTemplates = disks_.templateFromDesktop("desktops", "a.qcow2", "bases", "../x.qcow2",
                                                   TemplateMode::kFlatten);
  ASSERT_FALSE(outOfTemplates.ok());
  EXPECT_EQ(outOfTemplates.error().code(), Errc::kInvalidArgument);
  EXPECT_THAT(outOfTemplates.error().message(), HasSubstr("storage 'bases'"));
  auto outOfDesktops = disks_.templateFromDesktop("desktops", "/etc/passwd", "bases", "x.qcow2",
                                                  TemplateMode::kFlatten);
  ASSERT_FALSE(outOfDesktops.ok());
  EXPECT_EQ(outOfDesktops.error().code(), Errc::kInvalidArgument);
  auto deleted = disks_.deleteBase("bases", "../desktops/a.qcow2");
  ASSERT_FALSE(deleted.ok());
  EXPECT_EQ(deleted.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(fs::exists(desktops_ / "a.qcow2"));
  auto users = disks_.imagesUsing("bases", "../../etc/passwd");
  ASSERT_FALSE(users.ok());
  EXPECT_EQ(users.error().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir_ / "x.qcow2"));
  EXPECT_TRUE(runner_.commands().empty());
}

TEST_F(DisksTest, AFailedTemplateLeavesNothingBehind) {
  test::writeFile(desktops_ / "a.qcow2", "desktop");
  // qemu-img writes half of its output, then fails.
  process::RecordingRunner failing([](const process::Command& c) -> Result<process::Outcome> {
    test::writeFile(c.argv.back(), "half an image");
    return process::Outcome{.exitCode = 1, .err = "qemu-img: error while writing: No space\n"};
  });
  Disks disks({{"bases", bases_}, {"desktops", desktops_}}, failing);
  auto result = disks.templateFromDesktop("desktops", "a.qcow2", "bases", "tpl/t.qcow2",
                                          TemplateMode::kFlatten);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kIo);
  EXPECT_THAT(result.error().message(),
              HasSubstr("Cannot make the template image " + (bases_ / "tpl" / "t.qcow2").native() +
                        " in storage 'bases' from " + (desktops_ / "a.qcow2").native() + "."));
  EXPECT_THAT(result.error().message(), HasSubstr("No space"));
  ASSERT_EQ(failing.commands().size(), 1U);
  EXPECT_EQ(failing.commands()[0].argv.back().find((bases_ / "tpl").native() + "/.t.qcow2.tmp-"),
            0U);
  EXPECT_TRUE(fs::is_empty(bases_ / "tpl"));
}

TEST_F(DisksTest, ReportsFreeSpacePerStorage) {
  Disks disks({{"bases", bases_}, {"desktops", desktops_}, {"gone", dir_ / "gone"}}, runner_);
  auto free = disks.freeSpaceGb();
  EXPECT_EQ(free.size(), 2U);
  ASSERT_TRUE(free.contains("bases"));
  ASSERT_TRUE(free.contains("desktops"));
  EXPECT_GE(free["bases"], 0);
  EXPECT_FALSE(free.contains("gone"));
}

// The same operations on real images, with qemu-img and qemu-io.
class DiskImagesTest : public ::testing::Test {
 protected:
  DiskImagesTest()
      : bases_(dir_ / "bases"),
        desktops_(dir_ / "desktops"),
        disks_({{"bases", bases_}, {"desktops", desktops_}}, runner_) {
    fs::create_directories(bases_ / "win");
    fs::create_directories(desktops_);
  }

  void SetUp() override {
    if (!onPath("qemu-img") || !onPath("qemu-io"))
      GTEST_SKIP() << "qemu-img and qemu-io (Debian package qemu-utils) are not installed.";
    // A small base with its own pattern at 1 MiB, which templates must keep.
    run({"qemu-img", "create", "-q", "-f", "qcow2", base().native(), "4M"});
    io(base(), "write -P 0xcd 1M 64k");
  }

  static bool onPath(const std::string& program) {
    for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
      if (::access((fs::path(dir) / program).c_str(), X_OK) == 0)
        return true;
    }
    return false;
  }

  process::Outcome run(std::vector<std::string> argv) {
    auto outcome = process::runChecked(runner_, process::Command{.argv = std::move(argv)});
    if (!outcome.ok())
      ADD_FAILURE() << outcome.error().message();
    return outcome.valueOr(process::Outcome{});
  }

  // Runs one qemu-io command on a qcow2 image; a failed pattern check fails it.
  bool io(const fs::path& image, const std::string& command) {
    auto outcome = runner_.run({.argv = {"qemu-io", "-f", "qcow2", "-c", command, image.native()}});
    return outcome.ok() && outcome->succeeded() &&
           outcome->out.find("verification failed") == std::string::npos;
  }

  // A desktop on the base with the pattern 0xab in its first 64 KiB.
  fs::path desktop(const std::string& rel) {
    auto overlay = disks_.createOverlay("bases", "win/base.qcow2", "desktops", rel);
    EXPECT_TRUE(overlay.ok()) << overlay.error().message();
    EXPECT_TRUE(io(*overlay, "write -P 0xab 0 64k"));
    return *overlay;
  }

  // The images that use the base; a scan that fails fails the test.
  std::vector<fs::path> usersOfBase() {
    auto users = disks_.imagesUsing("bases", "win/base.qcow2");
    EXPECT_TRUE(users.ok()) << users.error().message();
    return users.valueOr(std::vector<fs::path>{});
  }

  // A template made from the desktop disk "a.qcow2" in storage "bases".
  fs::path makeTemplate(const std::string& rel, TemplateMode mode) {
    auto made = disks_.templateFromDesktop("desktops", "a.qcow2", "bases", rel, mode);
    EXPECT_TRUE(made.ok()) << made.error().message();
    return made.valueOr(fs::path());
  }

  fs::path base() const { return bases_ / "win" / "base.qcow2"; }

  test::TempDir dir_;
  fs::path bases_;
  fs::path desktops_;
  process::SystemRunner runner_;
  Disks disks_;
};

TEST_F(DiskImagesTest, ReadsTheBackingFileFromTheHeader) {
  fs::path overlay = desktop("room1/aula-7.qcow2");
  auto backing = Disks::backingFile(overlay);
  ASSERT_TRUE(backing.ok()) << backing.error().message();
  EXPECT_EQ(*backing, base());
  auto none = Disks::backingFile(base());
  ASSERT_TRUE(none.ok()) << none.error().message();
  EXPECT_FALSE(none->has_value());
  // A relative name is relative to the image's folder, not to ours.
  fs::create_directories(bases_ / "lab");
  run({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "../win/base.qcow2", "-F", "qcow2",
       (bases_ / "lab" / "child.qcow2").native()});
  auto relative = Disks::backingFile(bases_ / "lab" / "child.qcow2");
  ASSERT_TRUE(relative.ok()) << relative.error().message();
  EXPECT_EQ(*relative, base());
}

// Overwrites the bytes of `path` at `offset` with `bytes`.
void patch(const fs::path& path, std::uint64_t offset, const std::string& bytes) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(static_cast<std::streamoff>(offset));
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(file.good()) << path;
}

TEST_F(DiskImagesTest, SaysWhatIsWrongWithABadHeader) {
  fs::path overlay = desktop("a.qcow2");
  struct Case {
    std::string name;
    Errc code;
    std::string says;
  };
  std::vector<Case> cases;

  test::writeFile(desktops_ / "raw.img", std::string(4096, '\0'));
  cases.push_back({"raw.img", Errc::kParse, "is not a qcow2 image"});

  test::writeFile(desktops_ / "short.qcow2", std::string("QFI\xfb\0\0\0\x03\0\0", 10));
  cases.push_back({"short.qcow2", Errc::kParse, "is truncated: its header needs 104 bytes"});

  fs::copy_file(overlay, desktops_ / "absurd.qcow2");
  patch(desktops_ / "absurd.qcow2", 16, std::string("\x7f\xff\xff\xff", 4));
  cases.push_back({"absurd.qcow2", Errc::kParse,
                   "gives its backing file name a size of 2147483647 bytes; qcow2 allows at most "
                   "1023"});

  fs::copy_file(overlay, desktops_ / "version.qcow2");
  patch(desktops_ / "version.qcow2", 4, std::string("\0\0\0\x09", 4));
  cases.push_back({"version.qcow2", Errc::kParse, "has version 9"});

  // The whole header, but the file ends inside the backing file name.
  std::string bytes = test::readFile(overlay);
  std::uint64_t nameOffset = 0;
  for (int i = 8; i < 16; ++i)
    nameOffset = (nameOffset << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  test::writeFile(desktops_ / "cut.qcow2", bytes.substr(0, nameOffset + 3));
  cases.push_back({"cut.qcow2", Errc::kParse, "its backing file name runs past the end"});

  cases.push_back({"missing.qcow2", Errc::kNotFound, "There is no image"});

  for (const auto& c : cases) {
    auto result = Disks::backingFile(desktops_ / c.name);
    ASSERT_FALSE(result.ok()) << c.name;
    EXPECT_EQ(result.error().code(), c.code) << c.name;
    EXPECT_THAT(result.error().message(), HasSubstr((desktops_ / c.name).native())) << c.name;
    EXPECT_THAT(result.error().message(), HasSubstr(c.says)) << c.name;
  }
  // Broken images do not make the scan for a base's users fail.
  EXPECT_THAT(usersOfBase(), ElementsAre(overlay));
}

TEST_F(DiskImagesTest, FlattensADesktopIntoAStandaloneTemplate) {
  fs::path overlay = desktop("a.qcow2");
  std::string overlayBefore = test::readFile(overlay);
  fs::path made = makeTemplate("tpl/flat.qcow2", TemplateMode::kFlatten);
  EXPECT_EQ(made, bases_ / "tpl" / "flat.qcow2");
  auto backing = Disks::backingFile(made);
  ASSERT_TRUE(backing.ok()) << backing.error().message();
  EXPECT_FALSE(backing->has_value());
  EXPECT_TRUE(io(made, "read -P 0xab 0 64k"));
  EXPECT_TRUE(io(made, "read -P 0xcd 1M 64k"));
  EXPECT_FALSE(io(made, "read -P 0xab 1M 64k"));  // the check can fail
  // The desktop is as it was, and only the template is in its folder.
  EXPECT_EQ(test::readFile(overlay), overlayBefore);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(bases_ / "tpl"))
    names.push_back(entry.path().filename().native());
  EXPECT_THAT(names, ElementsAre("flat.qcow2"));
  // A standalone template keeps nothing in use: its base could go.
  EXPECT_THAT(usersOfBase(), ElementsAre(overlay));
}

TEST_F(DiskImagesTest, RebasesADesktopIntoAnOverlayOnTheSameBase) {
  fs::path overlay = desktop("a.qcow2");
  std::string overlayBefore = test::readFile(overlay);
  fs::path made = makeTemplate("tpl/thin.qcow2", TemplateMode::kRebase);
  auto backing = Disks::backingFile(made);
  ASSERT_TRUE(backing.ok()) << backing.error().message();
  ASSERT_TRUE(backing->has_value());
  EXPECT_EQ(**backing, base());
  // Stored as an absolute name with the format, as qemu-img reads it.
  auto info = run({"qemu-img", "info", "--output=json", made.native()});
  EXPECT_THAT(info.out, HasSubstr("\"backing-filename\": \"" + base().native() + "\""));
  EXPECT_THAT(info.out, HasSubstr("\"backing-filename-format\": \"qcow2\""));
  EXPECT_TRUE(io(made, "read -P 0xab 0 64k"));
  EXPECT_TRUE(io(made, "read -P 0xcd 1M 64k"));
  // Only the desktop's change is in the template itself.
  auto map = run({"qemu-io", "-f", "qcow2", "-c", "map", made.native()});
  EXPECT_THAT(map.out, HasSubstr("64 KiB (0x10000) bytes     allocated at offset 0 bytes"));
  EXPECT_THAT(map.out, Not(HasSubstr("allocated at offset 1 MiB")));
  EXPECT_EQ(test::readFile(overlay), overlayBefore);
  // The template is a user of the base too.
  EXPECT_THAT(usersOfBase(), ElementsAre(made, overlay));
}

TEST_F(DiskImagesTest, RebaseNeedsABase) {
  auto flat = disks_.templateFromDesktop("bases", "win/base.qcow2", "bases", "tpl/x.qcow2",
                                         TemplateMode::kRebase);
  ASSERT_FALSE(flat.ok());
  EXPECT_EQ(flat.error().code(), Errc::kInvalidArgument);
  EXPECT_THAT(flat.error().message(), HasSubstr("has no backing file to keep"));
  auto missing = disks_.templateFromDesktop("desktops", "nope.qcow2", "bases", "tpl/x.qcow2",
                                            TemplateMode::kFlatten);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  EXPECT_FALSE(fs::exists(bases_ / "tpl" / "x.qcow2"));
}

TEST_F(DiskImagesTest, FindsTheImagesOfABaseOnly) {
  fs::path a = desktop("room1/a.qcow2");
  fs::path b = desktop("room2/b.qcow2");
  // An image on another base, a relative backing name, a file that is not qcow2.
  run({"qemu-img", "create", "-q", "-f", "qcow2", (bases_ / "other.qcow2").native(), "1M"});
  ASSERT_TRUE(disks_.createOverlay("bases", "other.qcow2", "desktops", "c.qcow2").ok());
  run({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
       (bases_ / "win" / "child.qcow2").native()});
  test::writeFile(desktops_ / "notes.txt", "not an image");
  EXPECT_THAT(usersOfBase(), ElementsAre(bases_ / "win" / "child.qcow2", a, b));
  auto missing = disks_.imagesUsing("bases", "win/gone.qcow2");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
}

TEST_F(DiskImagesTest, DeletesABaseOnlyWhenNothingUsesIt) {
  fs::path only = desktop("room1/aula-1.qcow2");
  auto refused = disks_.deleteBase("bases", "win/base.qcow2");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), Errc::kConflict);
  EXPECT_EQ(refused.error().message(),
            "The base image " + base().native() +
                " in storage 'bases' cannot be deleted while 1 image uses it (" + only.native() +
                "); delete those first.");
  for (int i = 2; i <= 7; ++i)
    desktop("room1/aula-" + std::to_string(i) + ".qcow2");
  refused = disks_.deleteBase("bases", "win/base.qcow2");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), Errc::kConflict);
  EXPECT_THAT(refused.error().message(), HasSubstr("while 7 images use it (" + only.native()));
  EXPECT_THAT(refused.error().message(),
              HasSubstr((desktops_ / "room1" / "aula-5.qcow2").native() + " and 2 more)"));
  EXPECT_THAT(refused.error().message(), Not(HasSubstr("aula-6")));
  EXPECT_TRUE(fs::exists(base()));

  for (int i = 1; i <= 7; ++i)
    ASSERT_TRUE(
        disks_.deleteOverlay("desktops", "room1/aula-" + std::to_string(i) + ".qcow2").ok());
  auto deleted = disks_.deleteBase("bases", "win/base.qcow2");
  ASSERT_TRUE(deleted.ok()) << deleted.error().message();
  EXPECT_FALSE(fs::exists(base()));
  auto again = disks_.deleteBase("bases", "win/base.qcow2");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kNotFound);
  EXPECT_EQ(again.error().message(),
            "There is no base image " + base().native() + " in storage 'bases'.");
}

}  // namespace
}  // namespace aula::agent
