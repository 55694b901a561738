// Choosing the host for a desktop that starts: filter, then a weighted score.
//
// Filters: the template's pools, the host's state, free memory (less a
// reserve), the vCPU over-commit limit, the storage the desktop needs.
// Score: CPU idle, free memory share, low vCPU/pCPU ratio, and a random
// share so that equal hosts are not picked in lock-step. Starts still in
// flight count as if they were already running, so a class logging in at
// once spreads across hosts instead of piling onto the one that looked idlest
// a second ago.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::broker {

struct HostCandidate {
  std::int64_t id = 0;
  std::string name;
  std::int64_t poolId = 0;
  bool online = false;
  std::int64_t cpus = 0;
  std::int64_t memoryMb = 0;
  double cpuIdle = 0;  // 0..1, averaged by the agent
  std::int64_t freeMemoryMb = 0;
  std::int64_t allocatedVcpus = 0;
  double vcpuRatioLimit = 0;                          // 0: use the default
  std::map<std::string, std::int64_t> freeStorageGb;  // named storage path -> free GiB
  // Filled by the Placer from its in-flight table.
  std::int64_t inFlightVcpus = 0;
  std::int64_t inFlightMemoryMb = 0;
};

struct PlacementRequest {
  std::int64_t vcpus = 1;
  std::int64_t memoryMb = 1024;
  std::int64_t diskGb = 0;
  std::string storage = "desktops";  // the storage path the overlay goes to
  std::vector<std::int64_t> pools;   // empty: any pool
};

struct PlacementWeights {
  double cpuIdle = 1.0;
  double freeMemory = 1.0;
  double vcpuRatio = 1.0;
  double random = 0.2;
  double defaultVcpuRatioLimit = 4.0;
  std::int64_t memoryReserveMb = 512;
};

// Scores and picks one host. Errors: kUnavailable, saying how many hosts each
// filter removed ("No host can start this desktop: 2 are offline, 3 lack
// 4096 MiB of free memory.").
Result<std::int64_t> chooseHost(const std::vector<HostCandidate>& hosts,
                                const PlacementRequest& request, const PlacementWeights& weights,
                                std::mt19937_64& rng);

// Tracks starts in flight per host so concurrent decisions see each other.
class Placer {
 public:
  explicit Placer(PlacementWeights weights) : weights_(weights), rng_(std::random_device{}()) {}

  // Chooses a host and reserves the request's resources on it until release().
  Result<std::int64_t> place(std::vector<HostCandidate> hosts, const PlacementRequest& request);
  void release(std::int64_t hostId, const PlacementRequest& request);
  std::int64_t inFlight(std::int64_t hostId) const;

 private:
  struct InFlight {
    std::int64_t starts = 0;
    std::int64_t vcpus = 0;
    std::int64_t memoryMb = 0;
  };
  PlacementWeights weights_;
  mutable std::mutex mutex_;
  std::mt19937_64 rng_;
  std::map<std::int64_t, InFlight> inFlight_;
};

}  // namespace aula::broker
