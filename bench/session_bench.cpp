// Opening a running desktop, on the real stack (libvirtd, aula-broker,
// aula-agent, the test guest under TCG; support/agent_stack):
//
//  - aula-greeter (the program, headless output, keys from standard input):
//    from the Enter on the desktop list to its log line "The desktop is on
//    screen", i.e. the first guest frame copied to its output. Between runs
//    the session menu's Disconnect brings the list back; the greeter process
//    stays, as on a lab PC;
//  - Debian's remote-viewer opening the broker's .vv for the same desktop
//    under Xvfb: from its start to the first root-window image in which the
//    guest's blue covers a tenth of the screen (XGetImage, polled every
//    2 ms);
//  - aula-greeter's resident memory (VmRSS) at the login screen and in the
//    session.
//
// The first run of each is a warm-up and not counted. Prints a Markdown
// table; docs/performance.md cites it. Needs root (qemu:///system),
// remote-viewer and Xvfb; says what is missing and exits 0 otherwise.
//
//   build/dev/bench/session_bench [--runs N]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aula/common/crypto.hpp"

#include "figures.hpp"
#include "support/agent_stack.hpp"

// Last: Xlib's macros (Status, None, Bool) would break the headers above.
#include <X11/Xlib.h>
#include <X11/Xutil.h>

extern char** environ;

namespace {

using aula::bench::median;
using aula::bench::rssKib;

namespace fs = std::filesystem;
using aula::json::Json;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

double msBetween(Steady::time_point a, Steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A child with a pipe to its standard input and its standard error read,
// line by line with the time each line arrived, by a thread of ours.
class Piped {
 public:
  explicit Piped(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}) {
    int in[2];
    int err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err[1], STDOUT_FILENO);
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<std::string> environment;
    for (char** e = environ; *e != nullptr; ++e)
      environment.emplace_back(*e);
    environment.insert(environment.end(), env.begin(), env.end());
    std::vector<char*> envp;
    envp.reserve(environment.size() + 1);
    for (auto& e : environment)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    if (posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), envp.data()) != 0)
      throw std::runtime_error("cannot start " + argv[0]);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(err[1]);
    stdin_ = in[1];
    reader_ = std::thread([this, fd = err[0]] {
      std::string pending;
      char chunk[4096];
      ssize_t got;
      while ((got = ::read(fd, chunk, sizeof chunk)) > 0) {
        const auto now = Steady::now();
        pending.append(chunk, static_cast<std::size_t>(got));
        std::lock_guard lock(mutex_);
        for (auto end = pending.find('\n'); end != std::string::npos; end = pending.find('\n')) {
          lines_.emplace_back(pending.substr(0, end), now);
          pending.erase(0, end + 1);
        }
      }
      ::close(fd);
    });
  }
  ~Piped() {
    stop();
    if (reader_.joinable())
      reader_.join();
  }
  Piped(const Piped&) = delete;
  Piped& operator=(const Piped&) = delete;

  pid_t pid() const { return pid_; }
  void write(const std::string& text) {
    if (::write(stdin_, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
      throw std::runtime_error("cannot write to the child");
  }
  std::size_t lineCount() {
    std::lock_guard lock(mutex_);
    return lines_.size();
  }
  // The time of the first line from `from` on that holds `text`.
  std::optional<Steady::time_point> waitLine(std::string_view text, std::size_t from,
                                             std::chrono::seconds limit) {
    const auto deadline = Steady::now() + limit;
    while (Steady::now() < deadline) {
      {
        std::lock_guard lock(mutex_);
        for (std::size_t i = from; i < lines_.size(); ++i) {
          if (lines_[i].first.find(text) != std::string::npos)
            return lines_[i].second;
        }
      }
      std::this_thread::sleep_for(1ms);
    }
    return std::nullopt;
  }
  std::string tail() {
    std::lock_guard lock(mutex_);
    std::string out;
    for (std::size_t i = lines_.size() > 15 ? lines_.size() - 15 : 0; i < lines_.size(); ++i)
      out += lines_[i].first + "\n";
    return out;
  }
  void stop() {
    if (stdin_ >= 0) {
      ::close(stdin_);
      stdin_ = -1;
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      for (int i = 0; i < 300 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(10ms);
      if (::waitpid(pid_, &status, WNOHANG) == 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  std::thread reader_;
  std::mutex mutex_;
  std::vector<std::pair<std::string, Steady::time_point>> lines_;
};

// The share of the test guest's blue on an X display's root window.
double guestBlueShare(Display* display) {
  const Window root = DefaultRootWindow(display);
  XWindowAttributes attributes{};
  XGetWindowAttributes(display, root, &attributes);
  XImage* image = XGetImage(display, root, 0, 0, static_cast<unsigned>(attributes.width),
                            static_cast<unsigned>(attributes.height), AllPlanes, ZPixmap);
  if (image == nullptr)
    return 0;
  std::size_t blue = 0;
  for (int y = 0; y < attributes.height; y += 2) {
    for (int x = 0; x < attributes.width; x += 2) {
      const unsigned long p = XGetPixel(image, x, y);
      const unsigned r = (p >> 16) & 0xff;
      const unsigned g = (p >> 8) & 0xff;
      const unsigned b = p & 0xff;
      if (r < 24 && g < 24 && b > 140)
        ++blue;
    }
  }
  XDestroyImage(image);
  return 400.0 * static_cast<double>(blue) /
         (static_cast<double>(attributes.width) * attributes.height);
}

std::optional<std::string> missingTool() {
  if (::geteuid() != 0)
    return "root (qemu:///system)";
  for (const char* tool : {"/usr/bin/remote-viewer", "/usr/bin/Xvfb"}) {
    if (!fs::exists(tool))
      return fmt::format("{} (provisioning/install-deps.sh installs it)", tool);
  }
  std::string why;
  if (!aula::test::Libvirtd::available(&why))
    return why;
  return std::nullopt;
}

}  // namespace

int runBench(int argc, char** argv) {
  int runs = 5;
  CLI::App app{
      "Enter to the first desktop frame: aula-greeter beside remote-viewer; the greeter's "
      "memory. Prints a Markdown table."};
  app.add_option("--runs", runs, "counted runs of each (after one warm-up)")
      ->check(CLI::Range(1, 50));
  CLI11_PARSE(app, argc, argv);
  if (auto missing = missingTool()) {
    fmt::print("session_bench: skipped, it needs {}.\n", *missing);
    return 0;
  }
  try {
    aula::test::AgentStack stack;
    // The student's desktop, running, its screen drawn.
    auto made = stack.admin("POST", "/api/v1/desktops",
                            Json{{"name", "Bench"},
                                 {"template_id", stack.templateId},
                                 {"owner_id", stack.studentId},
                                 {"persistent", true}});
    const auto id = made["id"].get<std::int64_t>();
    stack.admin("POST", fmt::format("/api/v1/desktops/{}/start", id));
    if (!aula::test::waitFor(
            [&] {
              return stack.admin("GET", fmt::format("/api/v1/desktops/{}", id))["state"] ==
                     "running";
            },
            120s))
      throw std::runtime_error("The desktop did not start.");

    const fs::path ca = stack.dir / "bench-ca.crt";
    aula::test::writeFile(ca, stack.caPem);

    // --- aula-greeter ---------------------------------------------------------------------
    std::vector<double> greeterMs;
    long rssLogin = 0;
    long rssSession = 0;
    {
      Piped greeter({AULA_GREETER_BIN, "--output", "headless", "--headless-size", "1280x1024",
                     "--keys-from-stdin", "--broker", stack.url(), "--ca-file", ca.string(),
                     "--locale-dir", AULA_GREETER_LOCALE_DIR});
      if (!greeter.waitLine("The login screen is up.", 0, 30s))
        throw std::runtime_error("aula-greeter did not show its login:\n" + greeter.tail());
      std::this_thread::sleep_for(500ms);
      rssLogin = rssKib(greeter.pid());
      std::size_t mark = greeter.lineCount();
      greeter.write(fmt::format("type {}\nkey enter\ntype {}\nkey enter\n", aula::test::kStudent,
                                aula::test::kStudentPassword));
      for (int run = 0; run <= runs; ++run) {
        if (!greeter.waitLine("the desktop list is up", mark, 60s))
          throw std::runtime_error("No desktop list:\n" + greeter.tail());
        std::this_thread::sleep_for(300ms);
        mark = greeter.lineCount();
        const auto enter = Steady::now();
        greeter.write("key enter\n");
        auto shown = greeter.waitLine("The desktop is on screen", mark, 60s);
        if (!shown)
          throw std::runtime_error("The desktop did not come on screen:\n" + greeter.tail());
        if (run > 0)
          greeterMs.push_back(msBetween(enter, *shown));
        std::this_thread::sleep_for(1s);
        rssSession = std::max(rssSession, rssKib(greeter.pid()));
        mark = greeter.lineCount();
        greeter.write("key menu\nkey down\nkey enter\n");  // the menu's Disconnect
      }
    }

    // --- remote-viewer under Xvfb -------------------------------------------------------------
    std::vector<double> viewerMs;
    {
      const std::string displayName = ":97";
      Piped xvfb(
          {"/usr/bin/Xvfb", displayName, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"});
      Display* display = nullptr;
      for (int i = 0; i < 100 && display == nullptr; ++i) {
        std::this_thread::sleep_for(50ms);
        display = XOpenDisplay(displayName.c_str());
      }
      if (display == nullptr)
        throw std::runtime_error("Xvfb did not start:\n" + xvfb.tail());
      for (int run = 0; run <= runs; ++run) {
        auto vv = stack.api->call("POST", fmt::format("/api/v1/desktops/{}/console", id),
                                  stack.studentToken, std::nullopt,
                                  {{"Accept", "application/x-virt-viewer"}});
        if (vv.status != 200)
          throw std::runtime_error("No .vv: " + vv.describe());
        const fs::path file = stack.dir / "bench.vv";
        aula::test::writeFile(file, vv.text);
        const auto start = Steady::now();
        Piped viewer({"/usr/bin/remote-viewer", file.string()},
                     {"DISPLAY=" + displayName, "GDK_BACKEND=x11"});
        bool seen = false;
        while (!seen && Steady::now() - start < 60s) {
          seen = guestBlueShare(display) > 10;
          if (!seen)
            std::this_thread::sleep_for(2ms);
        }
        const auto end = Steady::now();
        if (!seen)
          throw std::runtime_error("remote-viewer did not show the desktop:\n" + viewer.tail());
        if (run > 0)
          viewerMs.push_back(msBetween(start, end));
        viewer.stop();
        std::this_thread::sleep_for(500ms);
      }
      XCloseDisplay(display);
    }

    const double greeter = median(greeterMs);
    const double viewer = median(viewerMs);
    fmt::print("| figure | aula-greeter | remote-viewer | ratio |\n|---|---|---|---|\n");
    fmt::print(
        "| Enter to the first desktop frame, running desktop (median of {}) | {:.0f} ms | "
        "{:.0f} ms | {:.2f} |\n",
        runs, greeter, viewer, viewer > 0 ? greeter / viewer : 0.0);
    fmt::print("| resident memory at the login screen (headless 1280x1024) | {:.1f} MiB | | |\n",
               static_cast<double>(rssLogin) / 1024);
    fmt::print(
        "| resident memory in the session (highest after each first frame) | {:.1f} MiB | "
        "| |\n",
        static_cast<double>(rssSession) / 1024);
    fmt::print("\nRuns: greeter {:.0f} ms; remote-viewer {:.0f} ms.\n", fmt::join(greeterMs, ", "),
               fmt::join(viewerMs, ", "));
    stack.admin("DELETE", fmt::format("/api/v1/desktops/{}", id));
  } catch (const std::exception& e) {
    fmt::print(stderr, "session_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  return aula::bench::guardedMain("session_bench", [&] { return runBench(argc, argv); });
}
