// aula-spice-probe: a small SPICE client for tests. It connects to a guest's
// SPICE display the way a student's viewer does (spice-client-glib, the
// library under remote-viewer) and reports what happened, one line per
// outcome on stdout, so tests can check that a screenshot shows the guest,
// that a wrong or expired ticket is refused, that a viewer is kicked out when
// a new ticket is set with connected=disconnect, and that TLS checks the CA
// and the host subject.
//
//   aula-spice-probe [--host H] (--port N | --tls-port N) [--ca-file PEM]
//                    [--host-subject "C=..,O=..,CN=.."] [--ticket-file F]
//                    [--screenshot OUT.ppm] [--hold SECONDS] [--timeout SECONDS]
//
// The ticket comes from --ticket-file F (the first line) or from the
// environment variable AULA_SPICE_TICKET, never from the command line of a
// real deployment: process lists are world-readable. --ticket T exists for
// tests only. Without any ticket the probe connects without a password.
//
// --host-subject takes SPICE's form: comma-separated TYPE=value pairs in the
// certificate's order ("\," and "\\" escape), compared with the whole
// subject of the server's certificate; with it the host name is not checked.
// Without it a TLS connection checks the host name (or IP address) against
// the certificate's subjectAltName.
//
// Lines on stdout:
//   connected                          the ticket was accepted
//   screenshot WIDTHxHEIGHT PATH       a settled frame was written as P6 PPM
//   held N s                           stayed connected for --hold N seconds
//   refused: REASON                    the server refused the ticket
//   disconnected by server after N.N s the server closed the connection
//   error: REASON                      no connection (refused, TLS, timeout)
//                                      or a screenshot that could not be written
//
// Exit codes:
//   0  everything asked for was done
//   1  connected, but the screenshot could not be written
//   2  usage: bad options, or an unreadable or empty ticket file
//   3  the ticket was refused (wrong or expired: a SPICE authentication error)
//   4  the server disconnected us after we had connected (during --hold or
//      while waiting for a frame)
//   5  could not connect: connection refused, TLS failure, or no connection
//      (or, with --screenshot, no settled frame) within --timeout seconds
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <glib-object.h>
#include <glib.h>
#include <spice-client.h>

#include "glib_handles.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kExitOk = 0;
constexpr int kExitScreenshotFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitRefused = 3;
constexpr int kExitDisconnected = 4;
constexpr int kExitNoConnection = 5;

constexpr const char* kUsage =
    "usage: aula-spice-probe [--host H] (--port N | --tls-port N) [--ca-file PEM]\n"
    "                        [--host-subject \"C=..,O=..,CN=..\"] [--ticket-file F]\n"
    "                        [--screenshot OUT.ppm] [--hold SECONDS] [--timeout SECONDS]\n"
    "The host defaults to 127.0.0.1, --timeout to 20 s. The ticket comes from --ticket-file\n"
    "or $AULA_SPICE_TICKET (--ticket T: tests only, as process lists are world-readable).\n";

// A frame counts as settled when nothing was drawn for kSettleQuiet, or, for
// a screen that never stops changing (a blinking cursor), kSettleAtMost after
// the surface was first marked ready.
constexpr auto kSettleQuiet = 500ms;
constexpr auto kSettleAtMost = 3s;
constexpr guint kTickMs = 50;

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  int tlsPort = 0;
  std::string caFile;
  std::string hostSubject;
  std::optional<std::string> ticket;
  fs::path screenshot;
  std::optional<double> holdSeconds;
  double timeoutSeconds = 20;
};

// What went wrong with the command line, as a sentence for stderr.
struct UsageError {
  std::string message;
};

void printLine(const std::string& line) {
  (void)std::fputs(line.c_str(), stdout);
  (void)std::fputc('\n', stdout);
  (void)std::fflush(stdout);
}

std::optional<double> parseSeconds(std::string_view text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !(value >= 0) || value > 86400) {
    return std::nullopt;
  }
  return value;
}

std::optional<int> parsePort(std::string_view text) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > 65535) {
    return std::nullopt;
  }
  return value;
}

// The first line of `path`, without its line end.
std::optional<std::string> readTicketFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return std::nullopt;
  }
  if (!line.empty() && line.back() == '\r') {
    line.pop_back();
  }
  return line;
}

// Options, or the UsageError to print; `help` is set for --help.
std::optional<Options> parseOptions(int argc, char** argv, UsageError& error, bool& help) {
  Options options;
  std::optional<fs::path> ticketFile;
  std::optional<std::string> ticketArg;
  std::vector<std::string_view> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      return std::nullopt;
    }
    std::string_view name = arg;
    std::optional<std::string_view> value;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[i + 1];
    }
    constexpr std::string_view kTakesValue[] = {
        "--host",        "--port",   "--tls-port",   "--ca-file", "--host-subject",
        "--ticket-file", "--ticket", "--screenshot", "--hold",    "--timeout"};
    if (std::find(std::begin(kTakesValue), std::end(kTakesValue), name) == std::end(kTakesValue)) {
      error.message = fmt::format("Unknown argument '{}'.", arg);
      return std::nullopt;
    }
    if (!value) {
      error.message = fmt::format("The option {} needs a value.", name);
      return std::nullopt;
    }
    if (name.size() == arg.size()) {
      ++i;  // the value was the next argument
    }
    auto bad = [&](std::string_view what) {
      error.message = fmt::format("The option {} takes {}, not '{}'.", name, what, *value);
      return std::nullopt;
    };
    if (name == "--host") {
      options.host = std::string(*value);
    } else if (name == "--port" || name == "--tls-port") {
      auto port = parsePort(*value);
      if (!port) {
        return bad("a port from 1 to 65535");
      }
      (name == "--port" ? options.port : options.tlsPort) = *port;
    } else if (name == "--ca-file") {
      options.caFile = std::string(*value);
    } else if (name == "--host-subject") {
      options.hostSubject = std::string(*value);
    } else if (name == "--ticket-file") {
      ticketFile = fs::path(*value);
    } else if (name == "--ticket") {
      ticketArg = std::string(*value);
    } else if (name == "--screenshot") {
      options.screenshot = fs::path(*value);
    } else {  // --hold, --timeout
      auto seconds = parseSeconds(*value);
      if (!seconds || (name == "--timeout" && *seconds <= 0)) {
        return bad("a number of seconds");
      }
      if (name == "--hold") {
        options.holdSeconds = *seconds;
      } else {
        options.timeoutSeconds = *seconds;
      }
    }
  }

  if (options.port == 0 && options.tlsPort == 0) {
    error.message = "Give --port or --tls-port (or both).";
    return std::nullopt;
  }
  if (options.tlsPort == 0 && (!options.caFile.empty() || !options.hostSubject.empty())) {
    error.message = "--ca-file and --host-subject need --tls-port.";
    return std::nullopt;
  }
  if (ticketFile && ticketArg) {
    error.message = "Give the ticket with --ticket-file or --ticket, not both.";
    return std::nullopt;
  }
  if (ticketFile) {
    options.ticket = readTicketFile(*ticketFile);
    if (!options.ticket || options.ticket->empty()) {
      error.message =
          fmt::format("Cannot read a ticket from the first line of '{}'.", ticketFile->native());
      return std::nullopt;
    }
  } else if (ticketArg) {
    options.ticket = std::move(ticketArg);
  } else if (const char* env = std::getenv("AULA_SPICE_TICKET"); env != nullptr) {
    options.ticket = std::string(env);
  }
  return options;
}

// ---- spice-client-glib in RAII --------------------------------------------

struct MainLoopUnref {
  void operator()(GMainLoop* loop) const { g_main_loop_unref(loop); }
};
using MainLoopPtr = std::unique_ptr<GMainLoop, MainLoopUnref>;

using aula::glib::GObjectPtr;
using aula::glib::SignalConnection;

// A GLib timeout removed when this goes away.
class TimeoutSource {
 public:
  TimeoutSource(guint intervalMs, GSourceFunc callback, gpointer data)
      : id_(g_timeout_add(intervalMs, callback, data)) {}
  ~TimeoutSource() { g_source_remove(id_); }
  TimeoutSource(const TimeoutSource&) = delete;
  TimeoutSource& operator=(const TimeoutSource&) = delete;

 private:
  guint id_;
};

// Writes the primary surface as a binary PPM (through a temporary file, so a
// reader never sees half a picture); the error is a sentence.
std::optional<std::string> writePpm(const SpiceDisplayPrimary& primary, const fs::path& path) {
  const auto width = static_cast<std::size_t>(primary.width);
  const auto height = static_cast<std::size_t>(primary.height);
  std::string pixels;
  pixels.reserve(width * height * 3);
  for (std::size_t y = 0; y < height; ++y) {
    const guint8* row = primary.data + y * static_cast<std::size_t>(primary.stride);
    for (std::size_t x = 0; x < width; ++x) {
      std::uint8_t r = 0;
      std::uint8_t g = 0;
      std::uint8_t b = 0;
      switch (primary.format) {
        case SPICE_SURFACE_FMT_32_xRGB:
        case SPICE_SURFACE_FMT_32_ARGB: {  // little-endian 0xAARRGGBB: B, G, R, A in memory
          const guint8* p = row + x * 4;
          b = p[0];
          g = p[1];
          r = p[2];
          break;
        }
        case SPICE_SURFACE_FMT_16_555:
        case SPICE_SURFACE_FMT_16_565: {
          const guint8* p = row + x * 2;
          const unsigned v = static_cast<unsigned>(p[0]) | (static_cast<unsigned>(p[1]) << 8);
          if (primary.format == SPICE_SURFACE_FMT_16_555) {
            r = static_cast<std::uint8_t>(((v >> 10) & 0x1f) * 255 / 31);
            g = static_cast<std::uint8_t>(((v >> 5) & 0x1f) * 255 / 31);
          } else {
            r = static_cast<std::uint8_t>(((v >> 11) & 0x1f) * 255 / 31);
            g = static_cast<std::uint8_t>(((v >> 5) & 0x3f) * 255 / 63);
          }
          b = static_cast<std::uint8_t>((v & 0x1f) * 255 / 31);
          break;
        }
        default:
          return fmt::format("The display surface has format {}, which the probe cannot save.",
                             static_cast<int>(primary.format));
      }
      pixels.push_back(static_cast<char>(r));
      pixels.push_back(static_cast<char>(g));
      pixels.push_back(static_cast<char>(b));
    }
  }
  fs::path partial = path;
  partial += ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out << "P6\n" << width << ' ' << height << "\n255\n";
    out.write(pixels.data(), static_cast<std::streamsize>(pixels.size()));
    if (!out.flush()) {
      return fmt::format("Cannot write the screenshot to '{}'.", partial.native());
    }
  }
  std::error_code ec;
  fs::rename(partial, path, ec);
  if (ec) {
    return fmt::format("Cannot move the screenshot to '{}': {}.", path.native(), ec.message());
  }
  return std::nullopt;
}

// ---- the probe --------------------------------------------------------------

class Probe {
 public:
  explicit Probe(Options options) : options_(std::move(options)) {}

  int run() {
    session_.reset(spice_session_new());
    loop_.reset(g_main_loop_new(nullptr, FALSE));
    const std::string port = options_.port != 0 ? std::to_string(options_.port) : "";
    const std::string tlsPort = options_.tlsPort != 0 ? std::to_string(options_.tlsPort) : "";
    g_object_set(session_.get(), "host", options_.host.c_str(), "port",
                 port.empty() ? nullptr : port.c_str(), "tls-port",
                 tlsPort.empty() ? nullptr : tlsPort.c_str(), "enable-audio", FALSE,
                 "enable-usbredir", FALSE, nullptr);
    if (options_.ticket) {
      g_object_set(session_.get(), "password", options_.ticket->c_str(), nullptr);
    }
    if (!options_.caFile.empty()) {
      g_object_set(session_.get(), "ca-file", options_.caFile.c_str(), nullptr);
    }
    if (!options_.hostSubject.empty()) {
      // Setting cert-subject adds the subject check to the default host-name
      // check, and either passing would do; a probe that checks the subject
      // must check only that.
      g_object_set(session_.get(), "cert-subject", options_.hostSubject.c_str(), "verify",
                   SPICE_SESSION_VERIFY_SUBJECT, nullptr);
    }

    started_ = Clock::now();
    connections_.emplace_back(session_.get(), "channel-new",
                              reinterpret_cast<GCallback>(&Probe::onChannelNew), this);
    TimeoutSource tick(kTickMs, &Probe::onTick, this);
    if (!spice_session_connect(session_.get())) {
      finish(kExitNoConnection,
             fmt::format("error: spice-client-glib could not start a connection to {}.", where()));
    } else {
      g_main_loop_run(loop_.get());
    }

    // Our own disconnect must not be taken for the server's.
    connections_.clear();
    spice_session_disconnect(session_.get());
    display_.reset();
    session_.reset();
    return exitCode_;
  }

 private:
  std::string where() const {
    if (options_.tlsPort != 0) {
      return fmt::format("{} (TLS port {})", options_.host, options_.tlsPort);
    }
    return fmt::format("{} (port {})", options_.host, options_.port);
  }

  double secondsSince(Clock::time_point t) const {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }

  // Ends the run; `line` (when not empty) is the last line printed.
  void finish(int exitCode, const std::string& line) {
    if (finished_) {
      return;
    }
    finished_ = true;
    exitCode_ = exitCode;
    if (!line.empty()) {
      printLine(line);
    }
    g_main_loop_quit(loop_.get());
  }

  // Nothing may throw through GLib's C frames: every callback runs its body
  // through here.
  template <typename F>
  static void guarded(gpointer data, F&& body) {
    auto* self = static_cast<Probe*>(data);
    try {
      if (!self->finished_) {
        body(*self);
      }
    } catch (const std::exception& e) {
      self->finish(kExitNoConnection, fmt::format("error: internal failure: {}", e.what()));
    } catch (...) {
      self->finish(kExitNoConnection, "error: internal failure.");
    }
  }

  static void onChannelNew(SpiceSession*, SpiceChannel* channel, gpointer data) {
    guarded(data, [&](Probe& self) { self.channelNew(channel); });
  }
  static void onChannelEvent(SpiceChannel* channel, SpiceChannelEvent event, gpointer data) {
    guarded(data, [&](Probe& self) { self.channelEvent(channel, event); });
  }
  static void onPrimaryCreate(SpiceChannel*, gint, gint, gint, gint, gint, gpointer,
                              gpointer data) {
    guarded(data, [](Probe& self) {
      self.lastDraw_ = Clock::now();
      self.markedAt_.reset();
    });
  }
  static void onInvalidate(SpiceChannel*, gint, gint, gint, gint, gpointer data) {
    guarded(data, [](Probe& self) { self.lastDraw_ = Clock::now(); });
  }
  static void onMark(SpiceChannel*, gint mark, gpointer data) {
    guarded(data, [mark](Probe& self) {
      if (mark != 0 && !self.markedAt_) {
        self.markedAt_ = Clock::now();
        self.lastDraw_ = Clock::now();
      }
    });
  }
  static gboolean onTick(gpointer data) {
    guarded(data, [](Probe& self) { self.tick(); });
    return G_SOURCE_CONTINUE;
  }

  void channelNew(SpiceChannel* channel) {
    connections_.emplace_back(channel, "channel-event",
                              reinterpret_cast<GCallback>(&Probe::onChannelEvent), this);
    int id = 0;
    g_object_get(channel, "channel-id", &id, nullptr);
    // A viewer reads the first display; the probe needs no other channel.
    if (SPICE_IS_DISPLAY_CHANNEL(channel) && id == 0 && !display_) {
      display_.reset(static_cast<SpiceChannel*>(g_object_ref(channel)));
      connections_.emplace_back(channel, "display-primary-create",
                                reinterpret_cast<GCallback>(&Probe::onPrimaryCreate), this);
      connections_.emplace_back(channel, "display-invalidate",
                                reinterpret_cast<GCallback>(&Probe::onInvalidate), this);
      connections_.emplace_back(channel, "display-mark",
                                reinterpret_cast<GCallback>(&Probe::onMark), this);
      spice_channel_connect(channel);
    }
  }

  static std::string reasonOf(SpiceChannel* channel, std::string_view fallback) {
    const GError* error = spice_channel_get_error(channel);
    if (error != nullptr && error->message != nullptr && *error->message != '\0') {
      return error->message;
    }
    return std::string(fallback);
  }

  void channelEvent(SpiceChannel* channel, SpiceChannelEvent event) {
    const bool main = SPICE_IS_MAIN_CHANNEL(channel);
    if (event == SPICE_CHANNEL_OPENED) {
      if (main && !connected_) {
        connected_ = Clock::now();
        printLine("connected");
        if (options_.screenshot.empty()) {
          startHoldOrFinish();
        }
      }
      return;
    }
    if (event == SPICE_CHANNEL_NONE || event == SPICE_CHANNEL_SWITCHING) {
      return;
    }
    // A display channel that closes normally is followed by the main channel.
    if (!main && event == SPICE_CHANNEL_CLOSED) {
      return;
    }
    if (event == SPICE_CHANNEL_ERROR_AUTH) {
      finish(kExitRefused,
             fmt::format("refused: {}", reasonOf(channel, "the server refused the ticket")));
      return;
    }
    if (connected_ && (main || event == SPICE_CHANNEL_ERROR_IO)) {
      finish(kExitDisconnected,
             fmt::format("disconnected by server after {:.1f} s", secondsSince(*connected_)));
      return;
    }
    std::string reason;
    switch (event) {
      case SPICE_CHANNEL_ERROR_CONNECT:
        reason = fmt::format("cannot connect to {}: {}", where(),
                             reasonOf(channel, "the connection failed"));
        break;
      case SPICE_CHANNEL_ERROR_TLS:
        reason = fmt::format(
            "TLS with {} failed (certificate not signed by the CA file, "
            "wrong host subject or name, or no TLS there): {}",
            where(), reasonOf(channel, "handshake failed"));
        break;
      case SPICE_CHANNEL_ERROR_LINK:
        reason = fmt::format("the SPICE link with {} failed: {}", where(),
                             reasonOf(channel, "link error"));
        break;
      default:
        reason = fmt::format("the connection to {} ended before it was ready: {}", where(),
                             reasonOf(channel, "I/O error"));
        break;
    }
    finish(kExitNoConnection, "error: " + reason);
  }

  void startHoldOrFinish() {
    if (!options_.holdSeconds) {
      finish(kExitOk, "");  // "connected" or "screenshot ..." was the last line
      return;
    }
    holdUntil_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(*options_.holdSeconds));
  }

  void tick() {
    const auto now = Clock::now();
    const auto timeout = std::chrono::duration<double>(options_.timeoutSeconds);
    if (!connected_) {
      if (now - started_ > timeout) {
        finish(kExitNoConnection, fmt::format("error: no connection to {} within {:g} s", where(),
                                              options_.timeoutSeconds));
      }
      return;
    }
    if (!options_.screenshot.empty() && !screenshotTaken_) {
      trySettledScreenshot(now);
      if (!finished_ && !screenshotTaken_ && now - started_ > timeout) {
        finish(kExitNoConnection,
               fmt::format("error: connected, but no settled frame from {} within {:g} s", where(),
                           options_.timeoutSeconds));
      }
      return;
    }
    if (holdUntil_ && now >= *holdUntil_) {
      finish(kExitOk, fmt::format("held {:g} s", *options_.holdSeconds));
    }
  }

  void trySettledScreenshot(Clock::time_point now) {
    if (!display_ || !markedAt_) {
      return;
    }
    if (now - lastDraw_ < kSettleQuiet && now - *markedAt_ < kSettleAtMost) {
      return;
    }
    SpiceDisplayPrimary primary{};
    if (!spice_display_channel_get_primary(display_.get(), 0, &primary) ||
        primary.data == nullptr || primary.width <= 0 || primary.height <= 0) {
      return;
    }
    if (auto failed = writePpm(primary, options_.screenshot)) {
      finish(kExitScreenshotFailed, "error: " + *failed);
      return;
    }
    screenshotTaken_ = true;
    printLine(fmt::format("screenshot {}x{} {}", primary.width, primary.height,
                          options_.screenshot.native()));
    startHoldOrFinish();
  }

  Options options_;
  GObjectPtr<SpiceSession> session_;
  GObjectPtr<SpiceChannel> display_;
  MainLoopPtr loop_;
  std::vector<SignalConnection> connections_;

  Clock::time_point started_;
  std::optional<Clock::time_point> connected_;
  std::optional<Clock::time_point> markedAt_;
  Clock::time_point lastDraw_;
  std::optional<Clock::time_point> holdUntil_;
  bool screenshotTaken_ = false;
  bool finished_ = false;
  int exitCode_ = kExitNoConnection;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    UsageError error;
    bool help = false;
    auto options = parseOptions(argc, argv, error, help);
    if (help) {
      (void)std::fputs(kUsage, stdout);
      return kExitOk;
    }
    if (!options) {
      (void)std::fprintf(stderr, "aula-spice-probe: %s\n%s", error.message.c_str(), kUsage);
      return kExitUsage;
    }
    Probe probe(std::move(*options));
    return probe.run();
  } catch (const std::exception& e) {
    printLine(fmt::format("error: internal failure: {}", e.what()));
    return kExitNoConnection;
  }
}
