// The process runner: argv, output, exit codes, timeouts, recording.
#include "aula/common/process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

namespace aula::process {
namespace {

using namespace std::chrono_literals;

TEST(ProcessTest, CapturesOutputAndExitCode) {
  SystemRunner runner;
  auto r = runner.run({.argv = {"sh", "-c", "echo out; echo err >&2; exit 3"}});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->exitCode, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_FALSE(r->succeeded());
}

TEST(ProcessTest, ArgumentsAreNotInterpretedByAShell) {
  SystemRunner runner;
  auto r = runner.run({.argv = {"echo", "a; rm -rf /tmp/x", "$HOME"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "a; rm -rf /tmp/x $HOME\n");
}

TEST(ProcessTest, FeedsStdinAndEnvironment) {
  SystemRunner runner;
  auto r = runner.run({.argv = {"sh", "-c", "cat; echo \"$AULA_TEST_VAR\""},
                       .stdinData = std::string("hello\n"),
                       .env = {{"AULA_TEST_VAR", "from-env"}}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "hello\nfrom-env\n");
}

TEST(ProcessTest, LargeOutputDoesNotDeadlock) {
  SystemRunner runner;
  auto r = runner.run({.argv = {"head", "-c", "1000000", "/dev/zero"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out.size(), 1000000u);
}

// A descriptor this process holds open (here without O_CLOEXEC, as a library
// might) is not the program's: it sees stdin, stdout and stderr only.
TEST(ProcessTest, TheProgramGetsNoDescriptorButTheStandardThree) {
  const int leaked = ::open("/dev/null", O_RDONLY);  // NOLINT(android-cloexec-open)
  ASSERT_GE(leaked, 3);
  SystemRunner runner;
  auto r = runner.run(Command{.argv = {"/bin/sh", "-c", "ls /proc/$$/fd"}});
  ::close(leaked);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "0\n1\n2\n");
}

TEST(ProcessTest, MissingProgramIsNotFound) {
  SystemRunner runner;
  auto r = runner.run({.argv = {"aula-no-such-program"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kNotFound);
  EXPECT_EQ(r.error().message(),
            "Cannot run 'aula-no-such-program': the program is not installed or not in PATH.");
}

TEST(ProcessTest, TimeoutKillsTheProcessGroup) {
  SystemRunner runner;
  auto start = std::chrono::steady_clock::now();
  // The grandchild keeps stdout open: the runner must not wait for it.
  auto r = runner.run({.argv = {"sh", "-c", "sleep 30 & sleep 30"}, .timeout = 300ms});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(ProcessTest, RunCheckedReportsStderr) {
  SystemRunner runner;
  auto r = runChecked(runner, {.argv = {"sh", "-c", "echo 'disk is full' >&2; exit 1"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(),
            "'sh -c echo 'disk is full' >&2; exit 1' failed with exit code 1: disk is full");
}

TEST(ProcessTest, RecordingRunnerRecordsAndAnswers) {
  RecordingRunner runner([](const Command& c) -> Result<Outcome> {
    Outcome o;
    o.exitCode = c.argv[0] == "qemu-img" ? 0 : 1;
    o.out = "recorded";
    return o;
  });
  auto r = runner.run({.argv = {"qemu-img", "create", "-f", "qcow2", "x.qcow2"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "recorded");
  ASSERT_EQ(runner.commands().size(), 1u);
  EXPECT_EQ(runner.commands()[0].display(), "qemu-img create -f qcow2 x.qcow2");
  EXPECT_FALSE(runChecked(runner, {.argv = {"virsh"}}).ok());
}

}  // namespace
}  // namespace aula::process
