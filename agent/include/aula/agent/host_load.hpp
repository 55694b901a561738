// The host's load as the heartbeat reports it: CPU idle since the last
// sample (from /proc/stat), memory (from /proc/meminfo), CPUs online, and
// the guests' allocation from the hypervisor. The parsers take text so that
// tests can feed them; the readers read the real files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/agent/hypervisor.hpp"
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

// The heartbeat's body (POST /api/v1/agent/heartbeat): load figures and
// every guest libvirt knows, so that the broker can reconcile.
json::Json heartbeatBody(double cpuIdle, const MemoryInfo& memory, int cpus,
                         const std::vector<DomainInfo>& domains,
                         const std::map<std::string, std::int64_t>& storageFreeGb);

// Samples /proc/stat between calls.
class CpuSampler {
 public:
  explicit CpuSampler(std::filesystem::path procStat = "/proc/stat");
  // The idle share since the previous call (since construction the first time).
  double idleSinceLast();

 private:
  std::filesystem::path path_;
  std::optional<CpuTimes> last_;
};

Result<MemoryInfo> readMemInfo(const std::filesystem::path& path = "/proc/meminfo");
}  // namespace aula::agent
