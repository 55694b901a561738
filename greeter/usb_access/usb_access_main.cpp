// aula-usb-access: what spice-client-glib runs before it opens a USB device
// for redirection (its SPICE_USB_ACL_BINARY; Debian's own helper asks polkit,
// which a lab image does not run). It reads "BUS DEVICE" on stdin, answers
// SUCCESS when this user may read and write /dev/bus/usb/BUS/DEVICE (the
// image's udev rule gives USB devices to the group plugdev, which the
// greeter's user is in) or a sentence saying why not, and then stays until
// stdin closes, as the device's redirection lasts. It changes nothing: no
// privilege, no ACL.
#include <cstdio>
#include <string>

#include <unistd.h>

namespace {

int answer(const std::string& line) {
  (void)std::fputs(line.c_str(), stdout);
  (void)std::fputc('\n', stdout);
  (void)std::fflush(stdout);
  return line == "SUCCESS" ? 0 : 1;
}

}  // namespace

int main() {
  int bus = 0;
  int device = 0;
  if (std::scanf("%d %d", &bus, &device) != 2 || bus < 1 || bus > 255 || device < 1 || device > 255)
    return answer("aula-usb-access expects a USB bus and device number, such as '2 3'.");
  char path[64] = {};
  (void)std::snprintf(path, sizeof path, "/dev/bus/usb/%03d/%03d", bus, device);
  if (::access(path, R_OK | W_OK) != 0) {
    return answer(std::string(path) +
                  " is not open to the greeter's user: the image's udev rule should give USB "
                  "devices to the group plugdev, and the user should be in it.");
  }
  answer("SUCCESS");
  // Stay while the redirection lasts: spice-client-glib closes our stdin
  // when it lets the device go.
  while (std::fgetc(stdin) != EOF) {
  }
  return 0;
}
