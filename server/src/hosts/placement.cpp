// Host placement: filters, then a weighted score.
#include "aula/broker/placement.hpp"

#include <algorithm>

namespace aula::broker {

Result<std::int64_t> chooseHost(const std::vector<HostCandidate>& hosts,
                                const PlacementRequest& request, const PlacementWeights& weights,
                                std::mt19937_64& rng) {
  int offline = 0;
  int otherPool = 0;
  int noMemory = 0;
  int overCommitted = 0;
  int noStorage = 0;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const HostCandidate* best = nullptr;
  double bestScore = -1e300;
  for (const auto& h : hosts) {
    if (!request.pools.empty() &&
        std::find(request.pools.begin(), request.pools.end(), h.poolId) == request.pools.end()) {
      ++otherPool;
      continue;
    }
    if (!h.online) {
      ++offline;
      continue;
    }
    std::int64_t freeMem = h.freeMemoryMb - h.inFlightMemoryMb - weights.memoryReserveMb;
    if (freeMem < request.memoryMb) {
      ++noMemory;
      continue;
    }
    double limit = h.vcpuRatioLimit > 0 ? h.vcpuRatioLimit : weights.defaultVcpuRatioLimit;
    std::int64_t cpus = std::max<std::int64_t>(h.cpus, 1);
    double ratioAfter = static_cast<double>(h.allocatedVcpus + h.inFlightVcpus + request.vcpus) /
                        static_cast<double>(cpus);
    if (ratioAfter > limit) {
      ++overCommitted;
      continue;
    }
    if (request.diskGb > 0) {
      auto it = h.freeStorageGb.find(request.storage);
      if (it != h.freeStorageGb.end() && it->second < request.diskGb) {
        ++noStorage;
        continue;
      }
    }
    double memShare =
        h.memoryMb > 0 ? static_cast<double>(freeMem) / static_cast<double>(h.memoryMb) : 0;
    // Starts in flight will take CPU too: count each as a busy vCPU.
    double idle =
        std::max(0.0, h.cpuIdle - static_cast<double>(h.inFlightVcpus) / static_cast<double>(cpus));
    double score = weights.cpuIdle * idle + weights.freeMemory * memShare +
                   weights.vcpuRatio * (1.0 - std::min(ratioAfter / limit, 1.0)) +
                   weights.random * unit(rng);
    if (score > bestScore) {
      bestScore = score;
      best = &h;
    }
  }
  if (best != nullptr)
    return best->id;

  std::vector<std::string> reasons;
  if (hosts.empty() || otherPool == static_cast<int>(hosts.size())) {
    return Error(
        Errc::kUnavailable,
        request.pools.empty()
            ? "No host can start this desktop: no hypervisor is enrolled yet."
            : "No host can start this desktop: no host is in the pools this template may use.");
  }
  if (offline > 0)
    reasons.push_back(fmt::format("{} offline", offline));
  if (noMemory > 0)
    reasons.push_back(fmt::format("{} lack {} MiB of free memory", noMemory, request.memoryMb));
  if (overCommitted > 0)
    reasons.push_back(fmt::format("{} would pass their vCPU limit", overCommitted));
  if (noStorage > 0) {
    reasons.push_back(
        fmt::format("{} lack {} GiB in storage '{}'", noStorage, request.diskGb, request.storage));
  }
  return makeError(Errc::kUnavailable,
                   "No host can start this desktop: {}. Try again later or ask an admin.",
                   fmt::join(reasons, ", "));
}

Result<std::int64_t> Placer::place(std::vector<HostCandidate> hosts,
                                   const PlacementRequest& request) {
  std::lock_guard lock(mutex_);
  for (auto& h : hosts) {
    auto it = inFlight_.find(h.id);
    if (it != inFlight_.end()) {
      h.inFlightVcpus = it->second.vcpus;
      h.inFlightMemoryMb = it->second.memoryMb;
    }
  }
  auto chosen = AULA_TRY(chooseHost(hosts, request, weights_, rng_));
  auto& f = inFlight_[chosen];
  f.starts += 1;
  f.vcpus += request.vcpus;
  f.memoryMb += request.memoryMb;
  return chosen;
}

void Placer::release(std::int64_t hostId, const PlacementRequest& request) {
  std::lock_guard lock(mutex_);
  auto it = inFlight_.find(hostId);
  if (it == inFlight_.end())
    return;
  it->second.starts -= 1;
  it->second.vcpus -= request.vcpus;
  it->second.memoryMb -= request.memoryMb;
  if (it->second.starts <= 0)
    inFlight_.erase(it);
}

std::int64_t Placer::inFlight(std::int64_t hostId) const {
  std::lock_guard lock(mutex_);
  auto it = inFlight_.find(hostId);
  return it == inFlight_.end() ? 0 : it->second.starts;
}

}  // namespace aula::broker
