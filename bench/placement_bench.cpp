// Placement decisions per second: chooseHost() over 100 and 1,000 hosts, and
// Placer::place() + release() with starts in flight, the path every desktop
// start takes. The hosts look like a real site's: mixed sizes, uneven load,
// a few offline or full, three pools of which the template may use two.
// Run through bench/run.sh; docs/performance.md explains the figures.
#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "aula/broker/placement.hpp"

namespace {

using aula::broker::chooseHost;
using aula::broker::HostCandidate;
using aula::broker::PlacementRequest;
using aula::broker::PlacementWeights;
using aula::broker::Placer;

// A fixed seed: every run places on the same site.
constexpr std::uint64_t kSiteSeed = 20240901;

std::vector<HostCandidate> makeSite(int count) {
  std::mt19937_64 rng(kSiteSeed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const std::int64_t sizes[] = {16, 24, 32, 64};
  std::vector<HostCandidate> hosts;
  hosts.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    HostCandidate h;
    h.id = i + 1;
    h.name = "hv-" + std::to_string(i + 1);
    h.poolId = 1 + i % 3;
    h.online = unit(rng) > 0.05;  // about one host in twenty is down
    h.cpus = sizes[rng() % 4];
    h.memoryMb = h.cpus * 4096;
    h.cpuIdle = 0.05 + 0.9 * unit(rng);
    // Some hosts are nearly full, most have room.
    h.freeMemoryMb =
        static_cast<std::int64_t>(static_cast<double>(h.memoryMb) * (0.02 + 0.9 * unit(rng)));
    h.allocatedVcpus = static_cast<std::int64_t>(static_cast<double>(h.cpus) * 4.0 * unit(rng));
    h.vcpuRatioLimit = i % 10 == 0 ? 2.0 : 0;  // a few hosts with a stricter over-commit limit
    h.freeStorageGb = {{"desktops", static_cast<std::int64_t>(20 + 2000 * unit(rng))},
                       {"templates", 500}};
    hosts.push_back(std::move(h));
  }
  return hosts;
}

PlacementRequest classroomDesktop() {
  return PlacementRequest{
      .vcpus = 2, .memoryMb = 4096, .diskGb = 40, .storage = "desktops", .pools = {1, 2}};
}

void BM_ChooseHost(benchmark::State& state) {
  auto hosts = makeSite(static_cast<int>(state.range(0)));
  auto request = classroomDesktop();
  PlacementWeights weights;
  std::mt19937_64 rng(1);
  std::int64_t failures = 0;
  for (auto _ : state) {
    auto chosen = chooseHost(hosts, request, weights, rng);
    if (!chosen)
      ++failures;
    benchmark::DoNotOptimize(chosen);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["no_host"] = static_cast<double>(failures);
}
BENCHMARK(BM_ChooseHost)->Arg(100)->Arg(1000);

// A class of 30 starts in flight at any time: each decision sees the starts
// before it, and the oldest start finishes as a new one is placed. The hosts
// vector is copied per call, as the broker builds it anew per start.
void BM_PlacerPlaceRelease(benchmark::State& state) {
  auto hosts = makeSite(static_cast<int>(state.range(0)));
  auto request = classroomDesktop();
  Placer placer{PlacementWeights{}};
  constexpr std::size_t kInFlight = 30;
  std::deque<std::int64_t> inFlight;
  std::int64_t failures = 0;
  for (auto _ : state) {
    auto chosen = placer.place(hosts, request);
    if (chosen) {
      inFlight.push_back(*chosen);
    } else {
      ++failures;
    }
    if (inFlight.size() > kInFlight) {
      placer.release(inFlight.front(), request);
      inFlight.pop_front();
    }
  }
  for (auto id : inFlight)
    placer.release(id, request);
  state.SetItemsProcessed(state.iterations());
  state.counters["no_host"] = static_cast<double>(failures);
}
BENCHMARK(BM_PlacerPlaceRelease)->Arg(100)->Arg(1000);

// The copy of the candidates alone, to tell the Placer's own cost from it.
void BM_CopyCandidates(benchmark::State& state) {
  auto hosts = makeSite(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto copy = hosts;
    benchmark::DoNotOptimize(copy.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CopyCandidates)->Arg(100)->Arg(1000);

}  // namespace

BENCHMARK_MAIN();
