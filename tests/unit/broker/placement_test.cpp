// Placement: the filters say why no host fits; the score spreads a class.
#include "aula/broker/placement.hpp"

#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace aula::broker {
namespace {

using ::testing::HasSubstr;

HostCandidate host(std::int64_t id, double idle = 0.9, std::int64_t freeMb = 60000) {
  return HostCandidate{.id = id,
                       .name = "hv" + std::to_string(id),
                       .poolId = 1,
                       .online = true,
                       .cpus = 16,
                       .memoryMb = 65536,
                       .cpuIdle = idle,
                       .freeMemoryMb = freeMb};
}

TEST(PlacementTest, PicksTheIdlerHostWhenRandomnessIsOff) {
  std::mt19937_64 rng(1);
  PlacementWeights w;
  w.random = 0;
  auto chosen = chooseHost({host(1, 0.2), host(2, 0.9), host(3, 0.5)},
                           {.vcpus = 2, .memoryMb = 2048}, w, rng);
  ASSERT_TRUE(chosen.ok()) << chosen.error().message();
  EXPECT_EQ(*chosen, 2);
}

TEST(PlacementTest, FiltersExplainWhyNothingFits) {
  std::mt19937_64 rng(1);
  auto offline = host(1);
  offline.online = false;
  auto full = host(2, 0.9, 1000);
  auto busy = host(3);
  busy.allocatedVcpus = 64;  // 16 cpus x ratio 4
  auto r = chooseHost({offline, full, busy}, {.vcpus = 2, .memoryMb = 4096}, {}, rng);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnavailable);
  EXPECT_THAT(r.error().message(), HasSubstr("1 offline"));
  EXPECT_THAT(r.error().message(), HasSubstr("1 lack 4096 MiB of free memory"));
  EXPECT_THAT(r.error().message(), HasSubstr("1 would pass their vCPU limit"));
}

TEST(PlacementTest, PoolsRestrictTheChoice) {
  std::mt19937_64 rng(1);
  auto gpu = host(7);
  gpu.poolId = 2;
  auto r = chooseHost({host(1), gpu}, {.vcpus = 1, .memoryMb = 1024, .pools = {2}}, {}, rng);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 7);
  auto none = chooseHost({host(1)}, {.vcpus = 1, .memoryMb = 1024, .pools = {2}}, {}, rng);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.error().message(), HasSubstr("no host is in the pools"));
}

TEST(PlacementTest, NoHostsSaysNoneIsEnrolled) {
  std::mt19937_64 rng(1);
  auto r = chooseHost({}, {}, {}, rng);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("no hypervisor is enrolled yet"));
}

TEST(PlacementTest, StartsInFlightSpreadAClassAcrossEqualHosts) {
  // 30 students log in at once; nothing finishes starting before all are
  // placed. Without in-flight counting every start would land on one host.
  PlacementWeights w;
  w.random = 0;
  Placer placer(w);
  std::vector<HostCandidate> hosts{host(1), host(2), host(3)};
  PlacementRequest request{.vcpus = 2, .memoryMb = 2048};
  std::map<std::int64_t, int> count;
  for (int i = 0; i < 30; ++i) {
    auto chosen = placer.place(hosts, request);
    ASSERT_TRUE(chosen.ok()) << chosen.error().message();
    count[*chosen]++;
  }
  EXPECT_EQ(count[1], 10);
  EXPECT_EQ(count[2], 10);
  EXPECT_EQ(count[3], 10);
  EXPECT_EQ(placer.inFlight(1), 10);
  for (int i = 0; i < 10; ++i)
    placer.release(1, request);
  EXPECT_EQ(placer.inFlight(1), 0);
}

TEST(PlacementTest, InFlightMemoryCountsAgainstFreeMemory) {
  PlacementWeights w;
  w.memoryReserveMb = 0;
  Placer placer(w);
  std::vector<HostCandidate> hosts{host(1, 0.9, 4096)};
  PlacementRequest request{.vcpus = 1, .memoryMb = 2048};
  EXPECT_TRUE(placer.place(hosts, request).ok());
  EXPECT_TRUE(placer.place(hosts, request).ok());
  auto third = placer.place(hosts, request);
  ASSERT_FALSE(third.ok());
  EXPECT_THAT(third.error().message(), HasSubstr("lack 2048 MiB"));
}

}  // namespace
}  // namespace aula::broker
