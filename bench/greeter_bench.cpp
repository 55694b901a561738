// The greeter's figures, each beside its floor in the same run (a Markdown
// table; docs/performance.md explains them):
//
//  - start to the first login frame: aula-greeter (headless output) started
//    against a real broker on loopback until it logs "The login screen is
//    up", beside the same program printing --help (process start and
//    dynamic linking: the floor);
//  - its resident memory at the login screen (VmRSS);
//  - drawing the login screen at 1280x1024 and 3840x2160, beside filling the
//    same canvas (the floor of touching every pixel once);
//  - a full-screen guest update copied to the output (1920x1080), beside one
//    memcpy of the frame.
//
//   build/dev/bench/greeter_bench [--runs N]
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aula/common/process.hpp"
#include "aula/greeter/view.hpp"

#include "figures.hpp"
#include "headless_output.hpp"
#include "render.hpp"
#include "support/broker_fixture.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace aula;
using namespace aula::greeter;
using Steady = std::chrono::steady_clock;

namespace {

using aula::bench::median;
using aula::bench::rssKib;

double msSince(Steady::time_point start) {
  return std::chrono::duration<double, std::milli>(Steady::now() - start).count();
}

// Starts aula-greeter headless; the time until it says the login screen is
// up, and its RSS then.
std::pair<double, long> greeterStart(const test::BrokerFixture& broker, const fs::path& dir,
                                     int run) {
  const fs::path log = dir / fmt::format("greeter-{}.log", run);
  const auto start = Steady::now();
  test::ChildProcess greeter({AULA_GREETER_BIN, "--output", "headless", "--broker",
                              broker.baseUrl(), "--ca-file", broker.caFile().string(), "--config",
                              "/nonexistent", "--locale-dir", AULA_GREETER_LOCALE_DIR},
                             log);
  double ms = -1;
  long rss = 0;
  while (msSince(start) < 20000) {
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("The login screen is up") != std::string::npos) {
      ms = msSince(start);
      rss = rssKib(greeter.pid());
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  greeter.stop(SIGTERM);
  return {ms, rss};
}

double helpFloor() {
  const auto start = Steady::now();
  process::SystemRunner runner;
  auto ran = runner.run({.argv = {AULA_GREETER_BIN, "--help"}});
  (void)ran;
  return msSince(start);
}

View loginView(const Translations& translations) {
  Greeter greeter({}, {"10.20.0.57", "52:54:00:3a:91:0c", "2026.12.1"});
  const Instant now{};
  greeter.start(now);
  greeter.handle(BrokerReady{School{"Institut Joan Miró", "", std::chrono::seconds(300)}}, now);
  return describe(greeter, translations);
}

}  // namespace

int runBench(int argc, char** argv) {
  int runs = 5;
  CLI::App app{"greeter_bench: the greeter's start, memory, drawing and frame copies."};
  app.add_option("--runs", runs, "repetitions of each figure (the median is shown)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  test::BrokerFixture broker(
      test::BrokerOptions{.settings = {{"greeter.school_name", "Institut Joan Miró"}}});
  test::TempDir dir;
  std::vector<double> starts;
  std::vector<double> rss;
  std::vector<double> floors;
  for (int i = 0; i < runs; ++i) {
    auto [ms, kib] = greeterStart(broker, dir.path(), i);
    if (ms < 0) {
      std::cerr << "greeter_bench: aula-greeter never showed the login screen; see " << dir.path()
                << "\n";
      return 1;
    }
    starts.push_back(ms);
    rss.push_back(static_cast<double>(kib) / 1024.0);
    floors.push_back(helpFloor());
  }

  auto translations = Translations::load(AULA_GREETER_LOCALE_DIR);
  if (!translations) {
    std::cerr << "greeter_bench: " << translations.error().message() << "\n";
    return 1;
  }
  const View view = loginView(*translations);
  Renderer renderer;
  auto drawing = [&](int width, int height) {
    HeadlessOutput output({{width, height}});
    std::vector<double> draw;
    std::vector<double> fill;
    for (int i = 0; i < runs * 4; ++i) {
      Canvas canvas = output.canvas(0);
      auto start = Steady::now();
      renderer.draw(view, canvas, "08:59");
      draw.push_back(msSince(start));
      start = Steady::now();
      std::fill(canvas.pixels, canvas.pixels + static_cast<std::ptrdiff_t>(width) * height,
                static_cast<std::uint32_t>(i));
      fill.push_back(msSince(start));
    }
    return std::pair{median(draw), median(fill)};
  };
  const auto [draw1280, fill1280] = drawing(1280, 1024);
  const auto [draw4k, fill4k] = drawing(3840, 2160);

  // A full-screen guest update: the runtime copies the frame's rows onto
  // the output's canvas, then the output shows it (memory here; the
  // scanout buffer on KMS).
  constexpr int kW = 1920;
  constexpr int kH = 1080;
  std::vector<std::uint32_t> guest(static_cast<std::size_t>(kW) * kH, 0x0000aa);
  HeadlessOutput output({{kW, kH}});
  std::vector<double> update;
  std::vector<double> copy;
  std::vector<std::uint32_t> target(guest.size());
  for (int i = 0; i < runs * 4; ++i) {
    guest[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(i);
    auto start = Steady::now();
    Canvas canvas = output.canvas(0);
    for (int y = 0; y < kH; ++y)
      std::memcpy(canvas.pixels + static_cast<std::ptrdiff_t>(y) * kW,
                  guest.data() + static_cast<std::ptrdiff_t>(y) * kW, kW * 4);
    const Rect all{0, 0, kW, kH};
    (void)output.present(0, {&all, 1});
    update.push_back(msSince(start));
    start = Steady::now();
    std::memcpy(target.data(), guest.data(), guest.size() * 4);
    copy.push_back(msSince(start));
  }

  std::cout << fmt::format(
      "| figure | greeter | floor | ratio |\n|---|---|---|---|\n"
      "| start to the first login frame (headless, broker on loopback) | {:.0f} ms | {:.0f} ms "
      "(`aula-greeter --help`) | {:.1f} |\n"
      "| resident memory at the login screen | {:.1f} MiB | — | — |\n"
      "| drawing the login screen, 1280x1024 | {:.2f} ms | {:.2f} ms (fill) | {:.1f} |\n"
      "| drawing the login screen, 3840x2160 | {:.2f} ms | {:.2f} ms (fill) | {:.1f} |\n"
      "| full-screen guest update to the output, 1920x1080 | {:.2f} ms | {:.2f} ms (one memcpy) "
      "| {:.1f} |\n",
      median(starts), median(floors), median(starts) / std::max(median(floors), 0.001), median(rss),
      draw1280, fill1280, draw1280 / std::max(fill1280, 0.001), draw4k, fill4k,
      draw4k / std::max(fill4k, 0.001), median(update), median(copy),
      median(update) / std::max(median(copy), 0.001));
  return 0;
}

int main(int argc, char** argv) {
  return aula::bench::guardedMain("greeter_bench", [&] { return runBench(argc, argv); });
}
