// The host's load as the heartbeat reports it: CPU idle since the last
// sample (from /proc/stat), memory (from /proc/meminfo), CPUs online, and
// the guests' allocation from the hypervisor. The parsers take text so that
// tests can feed them; HostLoad reads the files below a root folder that is
// "/" on a host and a folder of the test's own in tests (the OS is passed
// in, as libvirt's tests pass a fake /sys).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/agent/hypervisor.hpp"
#include "aula/common/agent_protocol.hpp"
#include "aula/common/json.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

struct CpuTimes {
  std::uint64_t idle = 0;   // idle + iowait jiffies
  std::uint64_t total = 0;  // every jiffy
};
// The aggregate "cpu " line of /proc/stat.
Result<CpuTimes> parseCpuTimes(std::string_view procStat);
// The idle share between two samples, 0..1; 1 when no time passed.
double idleBetween(const CpuTimes& before, const CpuTimes& after);

struct MemoryInfo {
  std::int64_t totalMb = 0;
  std::int64_t availableMb = 0;  // MemAvailable: what new guests can get without swapping
};
Result<MemoryInfo> parseMemInfo(std::string_view procMeminfo);
// The CPUs online: the "cpuN" lines of /proc/stat (at least 1).
int parseCpuCount(std::string_view procStat);

// The heartbeat (POST /api/v1/agent/heartbeat): load figures and every guest
// libvirt knows, so that the broker can reconcile.
proto::Heartbeat heartbeatOf(double cpuIdle, const MemoryInfo& memory, int cpus,
                             const std::vector<DomainInfo>& domains,
                             const std::map<std::string, std::int64_t>& storageFreeGb);

// Reads the load from <root>/proc; samples CPU idle between calls.
class HostLoad {
 public:
  explicit HostLoad(std::filesystem::path root = "/");
  // The idle share since the previous call (since construction the first time).
  double idleSinceLast();
  Result<MemoryInfo> memory() const;
  int cpusOnline() const;

 private:
  std::filesystem::path root_;
  std::optional<CpuTimes> last_;
};
}  // namespace aula::agent
