// aula-usb-access, spice-client-glib's USB access helper on a lab PC, run as
// spice-client-glib runs it: "BUS DEVICE" on stdin, one line back.
#include <string>

#include <gtest/gtest.h>

#include "aula/common/process.hpp"

namespace aula::greeter {
namespace {

process::Outcome ask(const std::string& input) {
  process::SystemRunner runner;
  process::Command command{.argv = {AULA_USB_ACCESS_BIN}, .stdinData = input};
  command.timeout = std::chrono::seconds(10);
  auto outcome = runner.run(command);
  EXPECT_TRUE(outcome) << outcome.error().message();
  return outcome ? *outcome : process::Outcome{};
}

TEST(UsbAccessTest, InputThatIsNotABusAndADeviceIsRefusedWithWhatItExpects) {
  for (const std::string input :
       {"", "x y\n", "2\n", "0 3\n", "2 0\n", "256 1\n", "2 999\n", "-1 -1\n"}) {
    auto outcome = ask(input);
    EXPECT_EQ(outcome.exitCode, 1) << "'" << input << "'";
    EXPECT_EQ(outcome.out, "aula-usb-access expects a USB bus and device number, such as '2 3'.\n")
        << "'" << input << "'";
  }
}

TEST(UsbAccessTest, ADeviceTheUserCannotOpenIsNamedWithTheFix) {
  // Bus 255, device 254: no such device here.
  auto outcome = ask("255 254\n");
  EXPECT_EQ(outcome.exitCode, 1);
  EXPECT_NE(outcome.out.find("/dev/bus/usb/255/254 is not open to the greeter's user"),
            std::string::npos)
      << outcome.out;
  EXPECT_NE(outcome.out.find("plugdev"), std::string::npos) << outcome.out;
  EXPECT_EQ(outcome.out.find("SUCCESS"), std::string::npos);
}

}  // namespace
}  // namespace aula::greeter
