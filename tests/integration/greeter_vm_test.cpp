// The greeter on real KMS and libinput: a small VM under QEMU (TCG, std VGA,
// so the kernel's bochs DRM driver) boots Debian's kernel with a test
// initramfs (tests/greeter_vm/build-greeter-vm.sh) in which udev and seatd
// run and aula-greeter runs unprivileged with --output kms, given the broker
// on the kernel command line. QEMU's screendump is what a student would see;
// QMP's send-key is the student's keyboard. The broker, agent, libvirtd and
// the desktop's guest are the real stack on this machine, which the VM
// reaches through QEMU's user network (10.0.2.2 is this machine's loopback).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>

#include <cairo.h>
#include <gtest/gtest.h>

#include "aula/common/crypto.hpp"
#include "aula/common/process.hpp"

#include "support/agent_stack.hpp"
#include "support/child_process.hpp"
#include "support/qmp.hpp"
#include "support/screen.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// What a screendump shows, in percent of its pixels.
struct Look {
  int width = 0;
  int height = 0;
  double black = 0;        // nothing drawn (a dead or blank output)
  double greeterBlue = 0;  // the greeter's background gradient
  double vgaBlue = 0;      // the test guest's background (#0000AA)
  double white = 0;        // the login card, or the guest's text
};

Look look(const fs::path& ppmPath) {
  Ppm ppm = readPpm(ppmPath);
  Look l{ppm.width, ppm.height};
  if (ppm.width == 0)
    return l;
  std::size_t black = 0;
  std::size_t greeter = 0;
  std::size_t vga = 0;
  std::size_t white = 0;
  const std::size_t count = static_cast<std::size_t>(ppm.width) * ppm.height;
  for (std::size_t i = 0; i < count; ++i) {
    const int r = static_cast<unsigned char>(ppm.rgb[i * 3]);
    const int g = static_cast<unsigned char>(ppm.rgb[i * 3 + 1]);
    const int b = static_cast<unsigned char>(ppm.rgb[i * 3 + 2]);
    if (r + g + b < 24)
      ++black;
    else if (r < 24 && g < 24 && b > 140)
      ++vga;
    else if (r > 200 && g > 200 && b > 200)
      ++white;
    else if (b > r + 30 && b > g + 20)
      ++greeter;
  }
  auto share = [&](std::size_t n) {
    return 100.0 * static_cast<double>(n) / static_cast<double>(count);
  };
  l.black = share(black);
  l.greeterBlue = share(greeter);
  l.vgaBlue = share(vga);
  l.white = share(white);
  return l;
}

std::string describe(const Look& l) {
  return fmt::format(
      "{}x{}: black {:.1f}%, greeter blue {:.1f}%, guest blue {:.1f}%, white {:.1f}%", l.width,
      l.height, l.black, l.greeterBlue, l.vgaBlue, l.white);
}

// A screendump as PNG, for the docs.
void savePng(const fs::path& ppmPath, const fs::path& png) {
  Ppm ppm = readPpm(ppmPath);
  if (ppm.width == 0)
    return;
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, ppm.width, ppm.height);
  cairo_surface_flush(surface);
  unsigned char* data = cairo_image_surface_get_data(surface);
  const int stride = cairo_image_surface_get_stride(surface);
  for (int y = 0; y < ppm.height; ++y) {
    auto* row = reinterpret_cast<std::uint32_t*>(data + static_cast<std::ptrdiff_t>(y) * stride);
    for (int x = 0; x < ppm.width; ++x) {
      const std::size_t i = (static_cast<std::size_t>(y) * ppm.width + x) * 3;
      row[x] = (static_cast<std::uint32_t>(static_cast<unsigned char>(ppm.rgb[i])) << 16) |
               (static_cast<std::uint32_t>(static_cast<unsigned char>(ppm.rgb[i + 1])) << 8) |
               static_cast<unsigned char>(ppm.rgb[i + 2]);
    }
  }
  cairo_surface_mark_dirty(surface);
  cairo_surface_write_to_png(surface, png.c_str());
  cairo_surface_destroy(surface);
}

class GreeterVm : public AgentStackTest {
 protected:
  static void SetUpTestSuite() {
    AgentStackOptions options;
    options.spicePublicHost = kUserNetHost;
    startStack(options);
  }

  void SetUp() override {
    AgentStackTest::SetUp();
    if (IsSkipped() || HasFatalFailure())
      return;
    ASSERT_NO_FATAL_FAILURE(buildSystem());
    auto fingerprint = crypto::certificateFingerprint(env_->caPem);
    ASSERT_TRUE(fingerprint);
    fingerprint_ = *fingerprint;
  }

  // What the VM boots: the greeter's test initramfs (tests/greeter_vm/).
  virtual void buildSystem() {
    const fs::path vm = AULA_GREETER_VM_DIR;
    auto built = runProgram(
        {AULA_GREETER_VM_SCRIPT, vm.string(), AULA_GREETER_BIN, AULA_GREETER_LOCALE_DIR}, 600s);
    ASSERT_TRUE(built.succeeded()) << "The greeter's test VM did not build:\n" << built.err;
    kernel_ = vm / "vmlinuz";
    initrd_ = vm / "initrd.img";
  }

  // Boots the VM as a lab PC told where the broker is and its CA's
  // fingerprint on the kernel command line.
  // `more` goes on the kernel command line too.
  void boot(const std::string& caFingerprint, const std::string& more = {}) {
    serial_ = dir_.path() / "serial.log";
    const fs::path qmpSocket = dir_.path() / "qmp.sock";
    // A lab PC from the network (its firmware's iPXE asks the broker's boot
    // listener what to run, and the broker's script says which kernel,
    // initramfs and command line), or QEMU given the system directly.
    std::vector<std::string> start = {"-boot", "n"};
    if (uefi_) {
      // OVMF, whose boot manager runs the EFI iPXE in QEMU's e1000 ROM
      // (Debian's ipxe-qemu, built from the same source as package ipxe).
      fs::copy_file("/usr/share/OVMF/OVMF_VARS_4M.fd", dir_.path() / "vars.fd",
                    fs::copy_options::overwrite_existing);
      start.insert(
          start.end(),
          {"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
           "-drive", "if=pflash,format=raw,file=" + (dir_.path() / "vars.fd").string()});
    }
    if (!netboot_) {
      start = {"-kernel",
               kernel_.string(),
               "-initrd",
               initrd_.string(),
               "-append",
               fmt::format("console=ttyS0 panic=-1 aula.broker=https://{}:{} aula.ca_fp={} {} {}",
                           kUserNetHost, env_->brokerPort, caFingerprint, cmdline_, more)};
    }
    std::vector<std::string> argv{
        "/usr/bin/qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "1536",
        "-vga",
        "std",
        "-display",
        "none",
        "-nic",
        netboot_ ? fmt::format("user,model=e1000,bootfile=http://{}:{}/boot/ipxe", kUserNetHost,
                               env_->bootPort)
                 : std::string("user,model=e1000"),
        "-device",
        "qemu-xhci,id=xhci",
        // A sound card whose output QEMU writes to a WAV file: what the
        // lab PC's speakers would play.
        "-audiodev",
        "wav,id=speakers,path=" + speakers().string(),
        "-device",
        "ich9-intel-hda",
        "-device",
        "hda-output,audiodev=speakers",
        "-no-reboot",
        "-serial",
        "file:" + serial_.string(),
        "-qmp",
        fmt::format("unix:{},server=on,wait=off", qmpSocket.string()),
    };
    argv.insert(argv.end(), start.begin(), start.end());
    qemu_ = std::make_unique<ChildProcess>(argv, dir_.path() / "qemu.log");
    ASSERT_TRUE(waitFor([&] { return fs::exists(qmpSocket) || !qemu_->running(); }, 20s));
    ASSERT_TRUE(qemu_->running()) << qemu_->log();
    qmp_.emplace(qmpSocket);
  }

  void TearDown() override {
    qmp_.reset();
    qemu_.reset();
    AgentStackTest::TearDown();
  }

  // The student types, as on the login screen of a lab PC, and the
  // desktop list comes up.
  void typeTheLogin() {
    auto type = [&] {
      qmp_->type(kStudent);
      qmp_->press({"ret"});
      qmp_->type(kStudentPassword);
      qmp_->press({"ret"});
    };
    const std::string signedIn = fmt::format("{} is signed in; the desktop list is up", kStudent);
    const std::string refused = fmt::format("The broker did not sign '{}' in", kStudent);
    type();
    bool answered = waitFor([&] { return serialSays(signedIn) || serialSays(refused); }, 90s);
    if (answered && !serialSays(signedIn)) {
      // The greeter said the password was wrong: on a machine busy enough
      // that the TCG guest stalls, a key sent over QMP now and then arrives
      // twice or not at all (seen in one clean run of four). Esc clears the
      // form; a student would type it again too.
      qmp_->press({"esc"});
      std::this_thread::sleep_for(2s);
      type();
      answered = waitFor([&] { return serialSays(signedIn); }, 90s);
    }
    if (answered)
      return;
    // What the student would see, kept past the test's own folder.
    const fs::path png = fs::temp_directory_path() / "aula-greeter-vm-login-went-nowhere.png";
    const Look seen = shot("login-went-nowhere");
    savePng(dir_.path() / "login-went-nowhere.ppm", png);
    FAIL() << "The student's desktop list did not come up after the typed login. On screen: "
           << describe(seen) << " (" << png.string() << "). Serial console:\n"
           << serialTail();
  }

  bool serialSays(std::string_view text) {
    return readFile(serial_).find(text) != std::string::npos;
  }
  std::string serialTail() { return fileTail(serial_, 40); }

  // A screendump now; saved as docs/greeter/NAME.png when the docs are redrawn.
  Look shot(const std::string& name) {
    const fs::path ppm = dir_.path() / (name + ".ppm");
    qmp_->execute("screendump", json::Json{{"filename", ppm.string()}});
    if (const char* docs = std::getenv("AULA_GREETER_SHOTS_DIR"))
      savePng(ppm, fs::path(docs) / (name + ".png"));
    return look(ppm);
  }

  // Screendumps until `wanted` holds; the last look either way.
  template <typename Wanted>
  Look shotUntil(const std::string& name, Wanted wanted, std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    Look l = shot(name);
    while (!wanted(l) && Clock::now() < deadline) {
      std::this_thread::sleep_for(1s);
      l = shot(name);
    }
    return l;
  }

  TempDir dir_;
  fs::path kernel_;
  fs::path initrd_;
  std::string cmdline_;      // what the system booted needs on its command line
  bool netboot_ = false;     // from the broker's boot listener, as a lab PC boots
  bool uefi_ = false;        // UEFI firmware (OVMF) instead of SeaBIOS
  std::string fingerprint_;  // the broker's CA, as an admin would give it
  fs::path serial_;
  fs::path speakers() const { return dir_.path() / "speakers.wav"; }
  std::unique_ptr<ChildProcess> qemu_;
  std::optional<Qmp> qmp_;
};

bool isLoginScreen(const Look& l) {
  // The gradient all around, the white card in the middle, nothing black.
  return l.greeterBlue > 60 && l.white > 5 && l.black < 1 && l.vgaBlue < 1;
}

// The test guest's 720x400 text screen, centred at its own size (a text
// console cannot follow the monitor's size; a desktop with the SPICE agent
// does): 28 % of 1280x800, blue with white text, none of the greeter left.
bool isGuestDesktop(const Look& l) {
  return l.vgaBlue > 15 && l.white > 2 && l.greeterBlue < 1;
}

TEST_F(GreeterVm, TheLoginScreenComesUpOnKmsAndKeysLogAStudentIntoTheDesktop) {
  const std::int64_t id = newDesktop("Informatik", env_->templateId, true);
  ASSERT_NO_FATAL_FAILURE(boot(fingerprint_));
  ASSERT_TRUE(waitFor([&] { return serialSays("The login screen is up."); }, 180s))
      << "The greeter did not say its login screen is up. Serial console:\n"
      << serialTail();
  EXPECT_TRUE(serialSays("/dev/dri/card0")) << "Not on KMS:\n" << serialTail();

  Look login = shotUntil("kms-login", isLoginScreen, 30s);
  ASSERT_TRUE(isLoginScreen(login)) << describe(login) << "\n" << serialTail();
  EXPECT_EQ(login.width, 1280);  // bochs's preferred mode
  EXPECT_EQ(login.height, 800);

  ASSERT_NO_FATAL_FAILURE(typeTheLogin());
  // The desktop list; Enter starts the one desktop and connects.
  Look list = shot("kms-desktops");
  EXPECT_TRUE(isLoginScreen(list)) << "The list has the same look: " << describe(list);
  qmp_->press({"ret"});

  Look desktop = shotUntil("kms-session", isGuestDesktop, 240s);
  EXPECT_TRUE(isGuestDesktop(desktop))
      << describe(desktop)
      << "\nDesktop: " << env_->admin("GET", fmt::format("/api/v1/desktops/{}", id)).dump()
      << "\nSerial console:\n"
      << serialTail();

  // The mouse: QEMU's PS/2 mouse under this VM, read by libinput in the
  // greeter, reaches the desktop's QEMU, whose own input trace shows it.
  const std::string domain = fmt::format("aula-{}", id);
  const fs::path log = fmt::format("/var/log/libvirt/qemu/{}.log", domain);
  const auto logBefore = readFile(log).size();
  test::virsh({"qemu-monitor-command", "--hmp", domain, "trace-event input_event_* on"});
  auto send = [&](json::Json events) {
    qmp_->execute("input-send-event", json::Json{{"events", std::move(events)}});
  };
  for (int i = 0; i < 4; ++i) {
    send(
        json::Json::array({json::Json{{"type", "rel"}, {"data", {{"axis", "x"}, {"value", 40}}}},
                           json::Json{{"type", "rel"}, {"data", {{"axis", "y"}, {"value", 20}}}}}));
    std::this_thread::sleep_for(100ms);
  }
  for (bool down : {true, false}) {
    send(json::Json::array(
        {json::Json{{"type", "btn"}, {"data", {{"button", "left"}, {"down", down}}}}}));
    std::this_thread::sleep_for(200ms);
  }
  std::string seen;
  const bool clicked = waitFor(
      [&] {
        auto text = readFile(log);
        seen = text.size() > logBefore ? text.substr(logBefore) : "";
        return seen.find("button left, down 0") != std::string::npos;
      },
      30s);
  test::virsh({"qemu-monitor-command", "--hmp", domain, "trace-event input_event_* off"});
  EXPECT_TRUE(clicked) << "The desktop's QEMU saw no click:\n"
                       << seen << "\nSerial console:\n"
                       << serialTail();
  EXPECT_NE(seen.find("button left, down 1"), std::string::npos) << seen;
  EXPECT_TRUE(seen.find("input_event_rel con -1, axis x, value ") != std::string::npos ||
              seen.find("input_event_abs") != std::string::npos)
      << "The desktop's QEMU saw no motion:\n"
      << seen;
  shot("kms-session-pointer");

  // Sound: the desktop's 440 Hz tone (the test guest plays it 1 s out of
  // every 10) comes out of this VM's HD Audio card, which QEMU records to a
  // WAV file (16-bit stereo after a 44-byte header): the greeter played it
  // through ALSA's default device.
  auto loudFrames = [&] {
    const std::string wav = readFile(speakers());
    std::size_t loud = 0;
    for (std::size_t i = 44; i + 4 <= wav.size(); i += 4) {
      std::int16_t left = 0;
      std::memcpy(&left, wav.data() + i, 2);
      loud += std::abs(left) > 2000 ? 1 : 0;
    }
    return loud;
  };
  const bool heard = waitFor([&] { return loudFrames() > 22050; }, 60s);
  EXPECT_TRUE(heard) << "half a second of the desktop's tone did not come out of the PC's sound "
                        "card ("
                     << loudFrames() << " loud frames). Serial console:\n"
                     << serialTail();
  EXPECT_TRUE(serialSays("The desktop's sound plays on 'default'")) << serialTail();

  // USB: a stick plugged into the lab PC during the session goes to the
  // desktop (the template's policy is the default, storage); a keyboard
  // plugged in stays with the PC. QEMU's `info usb` on the desktop lists its
  // redirection slots; an empty one shows 1.5 Mb/s, one holding a device the
  // device's speed (5000 Mb/s for QEMU's SuperSpeed stick, 12 for a keyboard).
  auto usbOfDesktop = [&] {
    return test::virsh({"qemu-monitor-command", "--hmp", domain, "info usb"});
  };
  auto slotsInUse = [](const std::string& info) {
    std::vector<std::string> speeds;
    static const std::regex kSlot(R"(Speed ([0-9.]+) Mb/s, Product USB Redirection Device)");
    for (auto it = std::sregex_iterator(info.begin(), info.end(), kSlot);
         it != std::sregex_iterator(); ++it) {
      if ((*it)[1].str() != "1.5")
        speeds.push_back((*it)[1].str());
    }
    return speeds;
  };
  const std::string before = usbOfDesktop();
  ASSERT_TRUE(slotsInUse(before).empty()) << before;
  qmp_->execute("blockdev-add", json::Json{{"driver", "null-co"},
                                           {"node-name", "stick"},
                                           {"size", 64 * 1024 * 1024},
                                           {"read-zeroes", true}});
  qmp_->execute("device_add", json::Json{{"driver", "usb-kbd"}, {"id", "kbd"}, {"bus", "xhci.0"}});
  qmp_->execute(
      "device_add",
      json::Json{
          {"driver", "usb-storage"}, {"id", "stick0"}, {"drive", "stick"}, {"bus", "xhci.0"}});
  std::string after;
  const bool redirected = waitFor(
      [&] {
        after = usbOfDesktop();
        return !slotsInUse(after).empty();
      },
      60s);
  EXPECT_TRUE(redirected) << "The stick did not reach the desktop. Its USB before:\n"
                          << before << "after:\n"
                          << after << "Serial console:\n"
                          << serialTail();
  std::this_thread::sleep_for(3s);  // the keyboard, had it been let through, would be in by now
  after = usbOfDesktop();
  EXPECT_EQ(slotsInUse(after), std::vector<std::string>{"5000"})
      << "only the stick, not the keyboard:\n"
      << after;
  EXPECT_TRUE(serialSays("USB device plugged in")) << serialTail();

  // The session menu's USB list (Shift+F12, Down, Enter) lists the stick
  // first, on the desktop; Enter brings it back to this PC, and again sends
  // it to the desktop. The keyboard goes first: QEMU would type the keys
  // below on it, and this VM's kernel has no USB HID driver to read it.
  qmp_->execute("device_del", json::Json{{"id", "kbd"}});
  std::this_thread::sleep_for(1s);
  qmp_->press({"shift", "f12"});
  std::this_thread::sleep_for(500ms);
  qmp_->press({"down"});
  std::this_thread::sleep_for(300ms);
  qmp_->press({"ret"});
  std::this_thread::sleep_for(2s);
  shot("kms-session-usb");
  qmp_->press({"ret"});
  const bool back = waitFor([&] { return slotsInUse(usbOfDesktop()).empty(); }, 30s);
  EXPECT_TRUE(back) << "Enter in the USB list did not bring the stick back:\n"
                    << usbOfDesktop() << "Serial console:\n"
                    << serialTail();
  qmp_->press({"ret"});
  const bool again = waitFor([&] { return !slotsInUse(usbOfDesktop()).empty(); }, 30s);
  EXPECT_TRUE(again) << "Enter in the USB list did not send the stick back to the desktop:\n"
                     << usbOfDesktop() << "Serial console:\n"
                     << serialTail();
  EXPECT_TRUE(serialSays("is now back on this PC")) << serialTail();
  EXPECT_TRUE(serialSays("is now on the desktop")) << serialTail();
}

// French on the login screen brings the French keyboard (AZERTY) through
// xkbcommon: the keys a student presses are the ones printed on a French
// keyboard, so the physical keys Q-L-I-C-E type "alice".
TEST_F(GreeterVm, FrenchBringsTheFrenchKeyboardAndItsKeysTypeTheLogin) {
  (void)newDesktop("Informatik", env_->templateId, true);
  ASSERT_NO_FATAL_FAILURE(boot(fingerprint_));
  ASSERT_TRUE(waitFor([&] { return serialSays("The login screen is up."); }, 180s)) << serialTail();
  ASSERT_TRUE(isLoginScreen(shotUntil("kms-login", isLoginScreen, 30s)));
  qmp_->press({"tab"});  // to the password
  qmp_->press({"tab"});  // to the language: English, Español, Català, Français
  for (int i = 0; i < 3; ++i)
    qmp_->press({"right"});
  qmp_->press({"up"});
  qmp_->press({"up"});  // back to the user name
  // The new keymap is loaded after the keys that chose it have been read;
  // keys already queued behind them would still be read as US ones.
  std::this_thread::sleep_for(3s);
  // On AZERTY: A is where US has Q; '-' is the 6 key; '1' needs Shift.
  ASSERT_EQ(std::string_view(kStudent), "alice");
  ASSERT_EQ(std::string_view(kStudentPassword), "student-secret-1");
  // Typed twice at most (Esc clears the form): once in seven runs on a busy
  // machine the first login went nowhere, with nothing in the log to say
  // why. A keyboard that types US keys fails both.
  auto typeLogin = [&] {
    qmp_->type("qlice");
    qmp_->press({"ret"});
    qmp_->type("student");
    qmp_->press({"6"});
    qmp_->type("secret");
    qmp_->press({"6"});
    qmp_->press({"shift", "1"});
    qmp_->press({"ret"});
  };
  const std::string signedIn = fmt::format("{} is signed in; the desktop list is up", kStudent);
  typeLogin();
  if (!waitFor([&] { return serialSays(signedIn); }, 45s)) {
    qmp_->press({"esc"});
    std::this_thread::sleep_for(2s);
    typeLogin();
  }
  EXPECT_TRUE(waitFor([&] { return serialSays(signedIn); }, 60s))
      << "The login typed on the French keyboard did not sign alice in. Serial console:\n"
      << serialTail();
  (void)shot("kms-desktops-fr");
}

// A PC whose GPU has no driver in the image (Debian 12's kernel has no
// simpledrm) offers only the firmware's framebuffer: here VESA's 1024x768 in
// 32 bits (SeaBIOS's bochs mode 0x144) with the bochs DRM driver left out.
// The greeter draws the login on /dev/fb0 and the student reaches the
// desktop on it.
TEST_F(GreeterVm, WithoutAGpuDriverTheFirmwareFramebufferShowsLoginAndDesktop) {
  (void)newDesktop("Informatik", env_->templateId, true);
  ASSERT_NO_FATAL_FAILURE(boot(fingerprint_, "aulavm.nokms vga=0x344"));
  ASSERT_TRUE(waitFor([&] { return serialSays("The login screen is up."); }, 180s)) << serialTail();
  EXPECT_TRUE(serialSays("framebuffer /dev/fb0")) << "Not on fbdev:\n" << serialTail();
  EXPECT_FALSE(serialSays("/dev/dri/card0")) << serialTail();
  Look login = shotUntil("fbdev-login", isLoginScreen, 30s);
  ASSERT_TRUE(isLoginScreen(login)) << describe(login) << "\n" << serialTail();
  EXPECT_EQ(login.width, 1024);
  EXPECT_EQ(login.height, 768);

  ASSERT_NO_FATAL_FAILURE(typeTheLogin());
  qmp_->press({"ret"});
  Look desktop = shotUntil("fbdev-session", isGuestDesktop, 240s);
  EXPECT_TRUE(isGuestDesktop(desktop)) << describe(desktop) << "\n" << serialTail();
}

// A PC whose boot settings are wrong (here the CA fingerprint lost half its
// digits in a copy and paste) cannot look for the broker. The student sees a
// screen that says so, with this PC's address for the admin; the greeter
// stays up with it rather than exiting into a black screen.
TEST_F(GreeterVm, AWrongFingerprintOnTheCommandLineIsShownInsteadOfABlackScreen) {
  ASSERT_NO_FATAL_FAILURE(boot(fingerprint_.substr(0, 23)));
  ASSERT_TRUE(waitFor([&] { return serialSays("this PC is not set up correctly"); }, 180s))
      << "The greeter did not show that the PC is set up wrong. Serial console:\n"
      << serialTail();
  EXPECT_TRUE(serialSays("aula.ca_fp")) << "The log names the setting:\n" << serialTail();
  Look wrong = shotUntil("kms-setup-wrong", isLoginScreen, 30s);
  EXPECT_TRUE(isLoginScreen(wrong))
      << "The greeter's card, not a black screen: " << describe(wrong);
  std::this_thread::sleep_for(5s);
  EXPECT_FALSE(serialSays("the greeter exited")) << serialTail();
  EXPECT_TRUE(isLoginScreen(shot("kms-setup-wrong"))) << "and it stays";
}

// The lab image itself (image/build.sh, the thin flavour): systemd, udev,
// logind, networkd's DHCP on QEMU's user network, seatd and the greeter as
// the user aula, all from Debian's packages, booted as a lab PC boots it.
class LabImage : public GreeterVm {
 protected:
  // The broker puts the serial console and the journal on it on every
  // image's command line, where the test reads the greeter.
  static void SetUpTestSuite() {
    AgentStackOptions options;
    options.spicePublicHost = kUserNetHost;
    options.bootKernelArgs = "console=ttyS0 panic=-1 systemd.journald.forward_to_console=1";
    startStack(options);
  }

  void buildSystem() override {
    const fs::path out = AULA_IMAGE_OUT_DIR;
    auto built = runProgram({AULA_IMAGE_SCRIPT, "--greeter", AULA_GREETER_BIN, "--locale-dir",
                             AULA_GREETER_LOCALE_DIR, "--out", out.string()},
                            1800s);
    ASSERT_TRUE(built.succeeded()) << "The lab image did not build:\n" << built.err;
    kernel_ = out / "thin" / "vmlinuz";
    initrd_ = out / "thin" / "initrd.img";
    version_ = readFile(out / "thin" / "version");
    while (!version_.empty() && version_.back() == '\n')
      version_.pop_back();
    netboot_ = true;
  }

  // What an admin does with a new build: add it to the broker, release it
  // on the stable channel, and enter the lab PC's MAC as a thin client.
  void publish() {
    if (published_)
      return;  // once for the suite's broker
    published_ = true;
    const fs::path out = AULA_IMAGE_OUT_DIR;
    const fs::path home = dir_.path() / "admin";
    fs::create_directories(home);
    writeFile(home / "ca.crt", env_->caPem);
    auto aulactl = [&](std::vector<std::string> args) {
      args.insert(args.begin(), AULA_AULACTL_BIN);
      process::SystemRunner runner;
      auto ran = runner.run({.argv = args,
                             .timeout = 120s,
                             .env = {{"AULA_URL", env_->url()},
                                     {"AULA_TOKEN", env_->adminToken},
                                     {"AULA_CA_FILE", (home / "ca.crt").string()},
                                     {"HOME", home.string()},
                                     {"XDG_CONFIG_HOME", (home / "config").string()}}});
      ASSERT_TRUE(ran) << ran.error().message();
      EXPECT_TRUE(ran->succeeded())
          << fmt::format("aulactl {}", fmt::join(args, " ")) << ": " << ran->err;
    };
    aulactl({"images", "add", (out / "thin").string()});
    aulactl({"images", "promote", version_, "--channel", "stable"});
    aulactl({"boot-hosts", "set", std::string(kPcMac), "--kind", "thin_client"});
  }

  static constexpr std::string_view kPcMac = "52:54:00:12:34:56";  // QEMU's first NIC
  static inline bool published_ = false;
  static void TearDownTestSuite() {
    published_ = false;
    GreeterVm::TearDownTestSuite();
  }
  std::string version_;
};

TEST_F(LabImage, BootsIntoTheGreeterWhichLogsAStudentIntoTheDesktop) {
  const std::int64_t id = newDesktop("Informatik", env_->templateId, true);
  ASSERT_NO_FATAL_FAILURE(publish());
  ASSERT_NO_FATAL_FAILURE(boot(fingerprint_));
  ASSERT_TRUE(waitFor([&] { return serialSays("The login screen is up."); }, 240s))
      << "The greeter did not say its login screen is up. Serial console:\n"
      << serialTail();
  // The PC got its address from DHCP, and the greeter runs as its own user
  // with the screen from seatd, on KMS.
  EXPECT_TRUE(serialSays("/dev/dri/card0")) << "Not on KMS:\n" << serialTail();
  EXPECT_TRUE(serialSays("New client connected (pid: ") && serialSays(", uid: 900, gid: 900)"))
      << "seatd did not hand the seat to the user aula:\n"
      << serialTail();
  EXPECT_FALSE(serialSays("Failed to start")) << "A unit failed:\n" << serialTail();
  // It came from the network: the broker gave this PC its channel's image.
  EXPECT_NE(readFile(env_->dir / "broker.log")
                .find(fmt::format("Boot: {} (10.0.2.15, pcbios i386) from 127.0.0.1:", kPcMac)),
            std::string::npos)
      << fileTail(env_->dir / "broker.log", 20);
  EXPECT_NE(
      readFile(env_->dir / "broker.log").find(fmt::format(": thin {} (channel stable).", version_)),
      std::string::npos)
      << fileTail(env_->dir / "broker.log", 20);
  EXPECT_TRUE(serialSays(fmt::format("image thin {}.", version_))) << serialTail();
  // Its address and MAC as DHCP gave them (QEMU's user network), shown under
  // "This PC" however late DHCP answered.
  EXPECT_TRUE(waitFor([&] { return serialSays("10.0.2.15 52:54:00:12:34:56, image thin"); }, 30s))
      << serialTail();
  // No console to log in on, not even on the serial line the kernel was given.
  EXPECT_FALSE(serialSays(" login: ")) << serialTail();

  Look login = shotUntil("image-login", isLoginScreen, 30s);
  ASSERT_TRUE(isLoginScreen(login)) << describe(login) << "\n" << serialTail();

  ASSERT_NO_FATAL_FAILURE(typeTheLogin());
  qmp_->press({"ret"});
  Look desktop = shotUntil("image-session", isGuestDesktop, 240s);
  EXPECT_TRUE(isGuestDesktop(desktop))
      << describe(desktop)
      << "\nDesktop: " << env_->admin("GET", fmt::format("/api/v1/desktops/{}", id)).dump()
      << "\nSerial console:\n"
      << serialTail();
}

// The same PC with UEFI firmware: OVMF runs iPXE's EFI build, the broker
// answers it (platform efi, x86_64) with the same image, and Debian's
// kernel, started by the firmware as an EFI program, comes up into the
// greeter's login screen.
TEST_F(LabImage, BootsOnUefiFirmwareToTheLoginScreen) {
  ASSERT_NO_FATAL_FAILURE(publish());
  uefi_ = true;
  ASSERT_NO_FATAL_FAILURE(boot(fingerprint_));
  ASSERT_TRUE(waitFor([&] { return serialSays("The login screen is up."); }, 300s))
      << "The greeter did not say its login screen is up. Serial console:\n"
      << serialTail() << "\nBroker:\n"
      << fileTail(env_->dir / "broker.log", 10);
  EXPECT_NE(readFile(env_->dir / "broker.log")
                .find(fmt::format("Boot: {} (10.0.2.15, efi x86_64) from 127.0.0.1:", kPcMac)),
            std::string::npos)
      << fileTail(env_->dir / "broker.log", 20);
  EXPECT_TRUE(serialSays(fmt::format("image thin {}.", version_))) << serialTail();
  Look login = shotUntil("image-login-uefi", isLoginScreen, 30s);
  EXPECT_TRUE(isLoginScreen(login)) << describe(login) << "\n" << serialTail();
}

}  // namespace
}  // namespace aula::test
