// The agent's disk operations with the real qemu-img, on the real disk: how
// long a desktop's overlay takes to create over a small and a large template
// (it should not depend on the template's size), next to the floor of a
// plain qcow2 creation, and how long making a template from a desktop takes,
// flattened and rebased. Prints a Markdown table that docs/performance.md
// cites; bench/run.sh builds and runs it.
//
// The bases hold allocated data, so that the size is real and not just a
// number in a header: the small base is written in full with a pattern, the
// large one is preallocated (qemu-img's preallocation=falloc: all qcow2
// metadata written, the data clusters reserved on disk). Writing 20 GiB would
// take minutes and tells the overlay nothing more: creating an overlay reads
// only the base's header and tables.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aula/agent/disks.hpp"
#include "aula/common/log.hpp"
#include "aula/common/process.hpp"

#include "figures.hpp"

namespace {

namespace fs = std::filesystem;
using aula::agent::Disks;
using aula::agent::TemplateMode;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kMiB = 1024 * 1024;
constexpr std::int64_t kGiB = 1024 * kMiB;

struct Options {
  fs::path dir = "/var/tmp";
  int runs = 31;
  int templateRuns = 5;
  int largeGb = 20;
  int changesMb = 64;
};

// A step that fails ends the benchmark (caught in main): there is nothing to
// measure without it.
[[noreturn]] void fail(const std::string& what, const std::string& why) {
  throw std::runtime_error(fmt::format("{}: {}", what, why));
}

template <typename T>
T must(aula::Result<T> result, std::string_view what) {
  return result ? std::move(result).value()
                : throw std::runtime_error(fmt::format("{}: {}", what, result.error().message()));
}

// A new folder under the chosen one, removed with all in it at the end.
class WorkDir {
 public:
  explicit WorkDir(const fs::path& parent) {
    std::string pattern = (parent / "aula-disk-bench-XXXXXX").native();
    if (::mkdtemp(pattern.data()) == nullptr)
      fail("Cannot make a folder under " + parent.native(), std::strerror(errno));
    path_ = pattern;
  }
  ~WorkDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The file system type of the mount that holds `path` ("ext4", "tmpfs").
std::string fileSystemOf(const fs::path& path) {
  fs::path real = fs::canonical(path);
  std::ifstream mounts("/proc/self/mounts");
  std::string device, mountPoint, type, rest;
  std::string best, bestType = "unknown";
  while (mounts >> device >> mountPoint >> type && std::getline(mounts, rest)) {
    fs::path rel = real.lexically_relative(mountPoint);
    bool inside = !rel.empty() && *rel.begin() != "..";
    if (inside && mountPoint.size() >= best.size()) {
      best = mountPoint;
      bestType = type;
    }
  }
  return bestType;
}

// Bytes the file takes on disk (not its apparent size).
std::int64_t allocated(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0)
    fail("Cannot stat " + path.native(), std::strerror(errno));
  return static_cast<std::int64_t>(info.st_blocks) * 512;
}

void flush(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0)
    fail("Cannot flush " + path.native(), std::strerror(errno));
  ::close(fd);
}

double timeMs(const std::function<void()>& step) {
  auto start = Clock::now();
  step();
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Median (min–max), in ms.
struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;

  static Spread of(std::vector<double> ms) {
    std::sort(ms.begin(), ms.end());
    return {ms[ms.size() / 2], ms.front(), ms.back()};
  }
  std::string text() const { return fmt::format("{:.1f} ({:.1f}–{:.1f})", median, min, max); }
};

struct Figures {
  std::string fileSystem;
  double fillSeconds = 0;
  std::int64_t smallOnDisk = 0;
  std::int64_t largeOnDisk = 0;
  Spread overlaySmall;
  Spread overlayLarge;
  Spread plain;
  Spread flatten;
  Spread rebase;
  std::int64_t flatOnDisk = 0;
  std::int64_t thinOnDisk = 0;
};

class Bench {
 public:
  explicit Bench(const Options& options)
      : options_(options),
        work_(options.dir),
        templates_(work_.path() / "templates"),
        desktops_(work_.path() / "desktops"),
        disks_({{"templates", templates_}, {"desktops", desktops_}}, runner_) {
    fs::create_directories(templates_);
    fs::create_directories(desktops_);
  }

  Figures measure() {
    Figures f;
    f.fileSystem = fileSystemOf(work_.path());
    makeBases(f);
    std::vector<double> small, large, plain;
    // Interleaved, so a change in the machine's load touches all three alike.
    for (int i = 0; i < options_.runs; ++i) {
      small.push_back(overlayMs("small.qcow2", i));
      large.push_back(overlayMs("large.qcow2", i));
      fs::path file = desktops_ / fmt::format("plain-{}.qcow2", i);
      plain.push_back(timeMs([&] {
        run({"qemu-img", "create", "-q", "-f", "qcow2", file.native(), "1G"}, "plain qcow2");
      }));
      fs::remove(file);
    }
    f.overlaySmall = Spread::of(small);
    f.overlayLarge = Spread::of(large);
    f.plain = Spread::of(plain);
    templates(f);
    return f;
  }

  const fs::path& dir() const { return work_.path(); }

 private:
  aula::process::Outcome run(std::vector<std::string> argv, std::string_view what) {
    aula::process::Command command{.argv = std::move(argv), .timeout = std::chrono::minutes(30)};
    return must(aula::process::runChecked(runner_, command), what);
  }

  void makeBases(Figures& f) {
    fs::path small = templates_ / "small.qcow2";
    fs::path large = templates_ / "large.qcow2";
    fmt::print(stderr, "disk_bench: writing the 1 GiB base in {}.\n", work_.path().native());
    run({"qemu-img", "create", "-q", "-f", "qcow2", small.native(), "1G"}, "1 GiB base");
    f.fillSeconds = timeMs([&] {
                      run({"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 512M", "-c",
                           "write -P 0x5a 512M 512M", small.native()},
                          "filling the 1 GiB base");
                    }) /
                    1000;
    fmt::print(stderr, "disk_bench: preallocating the {} GiB base.\n", options_.largeGb);
    run({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=falloc", large.native(),
         fmt::format("{}G", options_.largeGb)},
        "large base");
    // Written back now, not while the overlays are timed.
    flush(small);
    flush(large);
    f.smallOnDisk = allocated(small);
    f.largeOnDisk = allocated(large);
  }

  double overlayMs(const std::string& base, int i) {
    std::string rel = fmt::format("overlay-{}-{}", i, base);
    double ms = timeMs([&] {
      must(disks_.createOverlay("templates", base, "desktops", rel), "creating an overlay");
    });
    must(disks_.deleteOverlay("desktops", rel), "deleting an overlay");
    return ms;
  }

  void templates(Figures& f) {
    fmt::print(stderr, "disk_bench: making templates from a desktop with {} MiB of changes.\n",
               options_.changesMb);
    must(disks_.createOverlay("templates", "small.qcow2", "desktops", "desk.qcow2"), "desktop");
    // The changes sit in the middle of the disk, over the base's data.
    run({"qemu-io", "-f", "qcow2", "-c", fmt::format("write -P 0x3c 256M {}M", options_.changesMb),
         (desktops_ / "desk.qcow2").native()},
        "writing the desktop's changes");
    std::vector<double> flatten, rebase;
    for (int i = 0; i < options_.templateRuns; ++i) {
      flatten.push_back(
          templateMs(fmt::format("flat-{}.qcow2", i), TemplateMode::kFlatten, f.flatOnDisk));
      rebase.push_back(
          templateMs(fmt::format("thin-{}.qcow2", i), TemplateMode::kRebase, f.thinOnDisk));
    }
    f.flatten = Spread::of(flatten);
    f.rebase = Spread::of(rebase);
  }

  double templateMs(const std::string& rel, TemplateMode mode, std::int64_t& onDisk) {
    fs::path made;
    double ms = timeMs([&] {
      made = must(disks_.templateFromDesktop("desktops", "desk.qcow2", "templates", rel, mode),
                  "making a template");
    });
    onDisk = allocated(made);
    must(disks_.deleteBase("templates", rel), "deleting a template");
    return ms;
  }

  Options options_;
  WorkDir work_;
  fs::path templates_;
  fs::path desktops_;
  aula::process::SystemRunner runner_;
  Disks disks_;
};

std::string loadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return fmt::format("{} {} {}", one, five, fifteen);
}

std::string machine(const std::string& loadBefore) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char date[32];
  (void)std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &tm);
  return fmt::format("{}; nproc {}; load average before {}, after {}", date,
                     std::thread::hardware_concurrency(), loadBefore, loadAverage());
}

std::string gib(std::int64_t bytes) {
  return bytes >= kGiB ? fmt::format("{:.2f} GiB", static_cast<double>(bytes) / kGiB)
                       : fmt::format("{:.1f} MiB", static_cast<double>(bytes) / kMiB);
}

void printTable(const std::string& command, const Options& o, const Figures& f,
                const std::string& loadBefore) {
  fmt::print("## Disk benchmark (agent)\n\n");
  fmt::print("- command: `{}`\n", command);
  fmt::print("- date: {}\n", machine(loadBefore));
  fmt::print("- folder: {} ({}); qemu-img via `aula::agent::Disks` and a real process each\n",
             o.dir.native(), f.fileSystem);
  fmt::print(
      "- bases: 1 GiB written in full with a pattern ({} on disk, written in {:.1f} s); "
      "{} GiB with preallocation=falloc ({} on disk)\n\n",
      gib(f.smallOnDisk), f.fillSeconds, o.largeGb, gib(f.largeOnDisk));
  fmt::print("| figure | ms, median (min–max) | ratio |\n|---|---:|---:|\n");
  fmt::print("| overlay on the 1 GiB base (`createOverlay`), {} runs | {} | |\n", o.runs,
             f.overlaySmall.text());
  fmt::print("| overlay on the {} GiB base, {} runs | {} | **{:.2f}** × the 1 GiB one |\n",
             o.largeGb, o.runs, f.overlayLarge.text(),
             f.overlayLarge.median / f.overlaySmall.median);
  fmt::print(
      "| floor: `qemu-img create` of a plain 1 GiB qcow2, {} runs | {} | overlay on 1 GiB = "
      "**{:.2f}** × this |\n",
      o.runs, f.plain.text(), f.overlaySmall.median / f.plain.median);
  fmt::print(
      "| template from a desktop with {} MiB of changes, flatten, {} runs | {} | result {} on "
      "disk |\n",
      o.changesMb, o.templateRuns, f.flatten.text(), gib(f.flatOnDisk));
  fmt::print("| same, rebase, {} runs | {} | result {} on disk |\n", o.templateRuns,
             f.rebase.text(), gib(f.thinOnDisk));
}

}  // namespace

int runBench(int argc, char** argv) {
  Options options;
  CLI::App app{"Measures the agent's disk operations with qemu-img and prints a Markdown table."};
  app.add_option("--dir", options.dir, "folder on the disk to measure (not tmpfs)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--runs", options.runs, "overlay creations per base")->check(CLI::Range(1, 1000));
  app.add_option("--template-runs", options.templateRuns, "templates made per mode")
      ->check(CLI::Range(1, 100));
  app.add_option("--large-gb", options.largeGb, "size of the large base, GiB")
      ->check(CLI::Range(2, 1000));
  CLI11_PARSE(app, argc, argv);

  std::string command = "disk_bench";
  for (int i = 1; i < argc; ++i)
    command += fmt::format(" {}", argv[i]);
  aula::log::setLevel(aula::log::Level::kWarn);
  try {
    std::string loadBefore = loadAverage();
    Bench bench(options);
    if (fileSystemOf(bench.dir()) == "tmpfs") {
      fmt::print(stderr, "disk_bench: {} is on tmpfs, which measures RAM, not a disk.\n",
                 options.dir.native());
    }
    auto figures = bench.measure();
    printTable(command, options, figures, loadBefore);
  } catch (const std::exception& e) {
    fmt::print(stderr, "disk_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  return aula::bench::guardedMain("disk_bench", [&] { return runBench(argc, argv); });
}
