// aula-greeter: start-up only. Reads where the broker is (kernel command
// line, /etc/aula/greeter.toml, flags), takes the seat, picks the output
// (KMS, else the firmware framebuffer, or memory with --output headless),
// and runs the greeter on the GLib main loop until SIGTERM.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <arpa/inet.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include "aula/common/config.hpp"
#include "aula/common/file.hpp"
#include "aula/common/log.hpp"
#include "aula/greeter/ports.hpp"
#include "aula/greeter/settings.hpp"

#include "headless_output.hpp"
#include "kms_output.hpp"
#include "runtime.hpp"
#include "seat_input.hpp"
#include "spice_session.hpp"

namespace fs = std::filesystem;
using namespace aula;
using namespace aula::greeter;

namespace {

std::string firstLine(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// This PC as an admin needs to find it: the interface of the default route
// (or, on a lab network without a router, the first other than loopback
// with an IPv4 address), its IPv4 address and MAC, and the image's version.
MachineInfo machineInfo() {
  MachineInfo info;
  std::ifstream routes("/proc/net/route");
  std::string line;
  std::string interface;
  std::getline(routes, line);  // the header
  while (std::getline(routes, line)) {
    std::istringstream fields(line);
    std::string name;
    std::string destination;
    fields >> name >> destination;
    if (destination == "00000000") {
      interface = name;
      break;
    }
  }
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) == 0) {
    for (ifaddrs* a = all; a != nullptr; a = a->ifa_next) {
      if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET ||
          (a->ifa_flags & IFF_LOOPBACK) != 0)
        continue;
      if (interface.empty())
        interface = a->ifa_name;
      if (interface == a->ifa_name && info.address.empty()) {
        char text[INET_ADDRSTRLEN] = {};
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                  sizeof text);
        info.address = text;
      }
    }
    freeifaddrs(all);
  }
  if (!interface.empty())
    info.mac = firstLine(fs::path("/sys/class/net") / interface / "address");
  info.imageVersion = firstLine("/etc/aula-image-version");
  return info;
}

struct Flags {
  std::string broker;
  std::string caFingerprint;
  std::string caFile;
  std::string config = "/etc/aula/greeter.toml";
  std::string language;
  std::string audioDevice;
  std::string output = "auto";
  std::string headlessSize = "1280x1024";
  std::string localeDir = AULA_GREETER_DEFAULT_LOCALE_DIR;
  bool keysFromStdin = false;
};

// --keys-from-stdin: lines of scripted input (scriptedKeys) on fd 0, for the
// headless output's benchmarks and tests.
struct StdinKeys {
  Runtime* runtime = nullptr;
  std::string pending;

  static gboolean onReadable(gint fd, GIOCondition, gpointer data) {
    auto& self = *static_cast<StdinKeys*>(data);
    char chunk[512];
    const ssize_t got = ::read(fd, chunk, sizeof chunk);
    if (got <= 0)
      return G_SOURCE_REMOVE;  // the script ended; the greeter goes on
    self.pending.append(chunk, static_cast<std::size_t>(got));
    for (auto end = self.pending.find('\n'); end != std::string::npos;
         end = self.pending.find('\n')) {
      const std::string line = self.pending.substr(0, end);
      self.pending.erase(0, end + 1);
      auto keys = scriptedKeys(line);
      if (!keys) {
        log::warn("{}", keys.error().message());
        continue;
      }
      for (const Key& key : *keys)
        self.runtime->key(key);
    }
    return G_SOURCE_CONTINUE;
  }
};

SettingsSource fileSettings(const std::string& path) {
  SettingsSource source;
  std::error_code ec;
  if (!fs::exists(path, ec))
    return source;
  config::Schema schema("AULA_GREETER_");
  schema.string("greeter.broker_url", "", "https://HOST:PORT of the Aula server")
      .string("greeter.ca_fingerprint", "", "SHA-256 fingerprint of the broker's CA")
      .string("greeter.ca_file", "", "the broker's CA as PEM, instead of the fingerprint")
      .string("greeter.language", "", "en, es, ca or fr");
  auto loaded = config::Config::loadFile(path, schema, config::noEnvironment());
  if (!loaded)
    throw std::runtime_error(loaded.error().message());
  for (const char* key : {"broker_url", "ca_fingerprint", "ca_file", "language"}) {
    const std::string& value = loaded->getString(std::string("greeter.") + key);
    if (!value.empty())
      source[key] = value;
  }
  return source;
}

struct Display {
  std::unique_ptr<Seat> seat;
  std::unique_ptr<Output> output;
  std::unique_ptr<SeatInput> keyboard;
};

Result<std::unique_ptr<Output>> openScreen(Seat& seat, const std::string& kind) {
  if (kind == "auto" || kind == "kms") {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/dev/dri", ec)) {
      if (!entry.path().filename().string().starts_with("card"))
        continue;
      auto fd = seat.openDevice(entry.path());
      if (!fd)
        continue;
      auto kms = KmsOutput::open(*fd, entry.path());
      if (kms)
        return std::unique_ptr<Output>(std::move(kms).value());
      log::warn("{}", kms.error().message());
    }
    if (kind == "kms")
      return makeError(Errc::kUnavailable, "No KMS device with a connected screen.");
  }
  // seatd hands out only DRM and input devices (logind any): otherwise the
  // framebuffer is opened as the greeter's user, who is in the video group
  // that udev gives /dev/fb0 to.
  file::UniqueFd fb0;
  if (auto fd = seat.openDevice("/dev/fb0"))
    fb0 = file::UniqueFd(::dup(*fd));
  else
    fb0 = file::UniqueFd(::open("/dev/fb0", O_RDWR | O_CLOEXEC));
  if (!fb0)
    return makeError(Errc::kUnavailable,
                     "This PC has no screen the greeter can use: no KMS device with a connected "
                     "screen, and /dev/fb0 cannot be opened ({}; the greeter's user needs the "
                     "video group).",
                     std::strerror(errno));
  log::info("No KMS device; drawing on the firmware's framebuffer /dev/fb0.");
  auto fb = FbdevOutput::open(std::move(fb0), "/dev/fb0");
  if (!fb)
    return fb.error();
  return std::unique_ptr<Output>(std::move(fb).value());
}

}  // namespace

static int run(int argc, char** argv) {
  Flags flags;
  CLI::App app{"aula-greeter: the lab PC's login screen and desktop viewer."};
  app.add_option("--broker", flags.broker, "https://HOST:PORT of the Aula server");
  app.add_option("--ca-fingerprint", flags.caFingerprint, "SHA-256 fingerprint of the broker's CA");
  app.add_option("--ca-file", flags.caFile, "the broker's CA as PEM, instead of the fingerprint");
  app.add_option("--config", flags.config, "settings file")->capture_default_str();
  app.add_option("--language", flags.language, "en, es, ca or fr");
  app.add_option("--audio-device", flags.audioDevice,
                 "the ALSA device the desktop's sound plays on (default: default; off: none)");
  app.add_option("--output", flags.output, "auto, kms, fbdev or headless")->capture_default_str();
  app.add_option("--headless-size", flags.headlessSize, "WIDTHxHEIGHT of the headless output")
      ->capture_default_str();
  app.add_option("--locale-dir", flags.localeDir, "where the translations are")
      ->capture_default_str();
  app.add_flag("--keys-from-stdin", flags.keysFromStdin,
               "headless only: read keys from standard input, a line each: 'type TEXT' or "
               "'key NAME' (benchmarks and tests)");
  CLI11_PARSE(app, argc, argv);

  try {
    Options options;
    SettingsSource fromFlags;
    for (const auto& [key, value] : {std::pair{"broker_url", flags.broker},
                                     {"ca_fingerprint", flags.caFingerprint},
                                     {"ca_file", flags.caFile},
                                     {"language", flags.language},
                                     {"audio_device", flags.audioDevice}}) {
      if (!value.empty())
        fromFlags[key] = value;
    }
    // Wrong settings are this PC's problem, not the student's: once there is
    // a screen they are shown on it (with this PC's address for the admin)
    // rather than leaving it black.
    std::string setupError;
    BrokerAddress address;
    std::string audioDevice;
    auto cmdline = file::readFile("/proc/cmdline");
    SettingsSource fromFile;
    try {
      fromFile = fileSettings(flags.config);
    } catch (const std::exception& e) {
      setupError = e.what();
    }
    if (setupError.empty()) {
      auto settings =
          resolveSettings(kernelParameters(cmdline ? *cmdline : ""), fromFile, fromFlags);
      if (!settings) {
        setupError = settings.error().message();
      } else {
        options.language = settings->language;
        audioDevice = settings->audioDevice;
        address = {settings->brokerUrl, settings->caFingerprint, {}};
        if (!settings->caFile.empty()) {
          auto pem = file::readFile(settings->caFile, "the broker's CA");
          if (pem)
            address.caPem = *pem;
          else
            setupError = pem.error().message();
        }
      }
    }
    if (!setupError.empty()) {
      std::cerr << "aula-greeter: " << setupError << "\n";
      if (flags.output == "headless")
        return 2;  // no screen to show it on
      options.setupError = setupError;
    }
    auto translations = Translations::load(flags.localeDir);
    if (!translations)
      log::warn("{} The greeter speaks English only.", translations.error().message());

    if (flags.keysFromStdin && flags.output != "headless") {
      std::cerr << "aula-greeter: --keys-from-stdin is for --output headless only; on a screen "
                   "the keyboard is read through the seat.\n";
      return 2;
    }
    Display display;
    if (flags.output == "headless") {
      int width = 0;
      int height = 0;
      if (std::sscanf(flags.headlessSize.c_str(), "%dx%d", &width, &height) != 2 || width < 320 ||
          height < 240) {
        std::cerr << "aula-greeter: --headless-size takes WIDTHxHEIGHT, at least 320x240.\n";
        return 2;
      }
      display.output = std::make_unique<HeadlessOutput>(std::vector<HeadSize>{{width, height}});
    } else {
      auto seat = Seat::open();
      if (!seat) {
        std::cerr << "aula-greeter: " << seat.error().message() << "\n";
        return 1;
      }
      display.seat = std::move(seat).value();
      auto screen = openScreen(*display.seat, flags.output);
      if (!screen) {
        std::cerr << "aula-greeter: " << screen.error().message() << "\n";
        return 1;
      }
      display.output = std::move(screen).value();
    }

    HttpBroker broker(address, AULA_GREETER_BUILD_TIME);
    SpiceSession session(audioDevice);
    MachineInfo machine = machineInfo();
    log::info("This PC: {}.", describeMachine(machine));
    Runtime runtime(RuntimeParts{broker, session, *display.output,
                                 translations ? std::move(translations).value() : Translations{},
                                 options, std::move(machine), [&display](const std::string& xkb) {
                                   if (display.keyboard) {
                                     if (auto set = display.keyboard->setLayout(xkb); !set)
                                       log::warn("{}", set.error().message());
                                   }
                                 }});
    if (display.seat) {
      auto keyboard = SeatInput::open(
          *display.seat, [&runtime](const Key& key) { runtime.key(key); },
          [&runtime](const Pointer& pointer) { runtime.pointer(pointer); });
      if (!keyboard)
        log::warn("No keyboard or mouse: {}", keyboard.error().message());
      else
        display.keyboard = std::move(keyboard).value();
    }

    GMainLoop* loop = g_main_loop_new(nullptr, FALSE);
    auto quit = [](gpointer data) -> gboolean {
      g_main_loop_quit(static_cast<GMainLoop*>(data));
      return G_SOURCE_REMOVE;
    };
    g_unix_signal_add(SIGTERM, quit, loop);
    g_unix_signal_add(SIGINT, quit, loop);
    auto dispatchSeat = [](gint, GIOCondition, gpointer data) -> gboolean {
      static_cast<Seat*>(data)->dispatch();
      return G_SOURCE_CONTINUE;
    };
    auto dispatchKeys = [](gint, GIOCondition, gpointer data) -> gboolean {
      static_cast<SeatInput*>(data)->dispatch();
      return G_SOURCE_CONTINUE;
    };
    if (display.seat)
      g_unix_fd_add(display.seat->fd(), G_IO_IN, dispatchSeat, display.seat.get());
    if (display.keyboard)
      g_unix_fd_add(display.keyboard->fd(), G_IO_IN, dispatchKeys, display.keyboard.get());
    StdinKeys stdinKeys{&runtime, {}};
    if (flags.keysFromStdin)
      g_unix_fd_add(STDIN_FILENO, G_IO_IN, &StdinKeys::onReadable, &stdinKeys);
    // A lab PC's address comes from DHCP, often after the greeter started:
    // the screens follow it.
    auto rereadMachine = [](gpointer data) -> gboolean {
      static_cast<Runtime*>(data)->machine(machineInfo());
      return G_SOURCE_CONTINUE;
    };
    const guint machineTimer = g_timeout_add_seconds(2, rereadMachine, &runtime);
    runtime.start();
    g_main_loop_run(loop);
    g_source_remove(machineTimer);
    g_main_loop_unref(loop);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "aula-greeter: " << e.what() << "\n";
    return 1;
  }
}

// spice-client-glib runs a helper before it opens a USB device to redirect
// it; ours (aula-usb-access, next to the greeter) only checks the access the
// image's udev rule gives. Set before any thread starts.
void pointUsbAccessHelper() {
  if (std::getenv("SPICE_USB_ACL_BINARY") != nullptr)
    return;
  std::error_code ec;
  const auto helper =
      std::filesystem::read_symlink("/proc/self/exe", ec).parent_path() / "aula-usb-access";
  if (!ec && std::filesystem::exists(helper, ec))
    ::setenv("SPICE_USB_ACL_BINARY", helper.c_str(), 1);
}

int main(int argc, char** argv) {
  try {
    pointUsbAccessHelper();
    return run(argc, argv);
  } catch (...) {
    (void)std::fputs("aula-greeter: stopped by an unexpected error.\n", stderr);
    return 1;
  }
}
