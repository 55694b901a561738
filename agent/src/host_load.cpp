// The host's load (see host_load.hpp).
#include "aula/agent/host_load.hpp"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace aula::agent {

namespace {

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool isRunningState(const std::string& state) {
  return state == "running" || state == "blocked" || state == "paused" || state == "shutting down";
}

}  // namespace

Result<CpuTimes> parseCpuTimes(std::string_view procStat) {
  auto at = procStat.find("cpu ");
  if (at != 0 && (at == std::string_view::npos || procStat[at - 1] != '\n')) {
    return Error(Errc::kParse, "/proc/stat has no aggregate 'cpu' line.");
  }
  auto end = procStat.find('\n', at);
  std::istringstream line(std::string(procStat.substr(at + 4, end - at - 4)));
  // user nice system idle iowait irq softirq steal (guest, guest_nice are in user)
  std::uint64_t fields[8] = {};
  int read = 0;
  for (auto& f : fields) {
    if (!(line >> f))
      break;
    ++read;
  }
  if (read < 4) {
    return Error(Errc::kParse, "/proc/stat's 'cpu' line has fewer than four figures.");
  }
  CpuTimes t;
  t.idle = fields[3] + fields[4];
  for (auto f : fields)
    t.total += f;
  return t;
}

double idleBetween(const CpuTimes& before, const CpuTimes& after) {
  if (after.total <= before.total || after.idle < before.idle)
    return 1.0;
  double share = static_cast<double>(after.idle - before.idle) /
                 static_cast<double>(after.total - before.total);
  return share < 0 ? 0 : (share > 1 ? 1 : share);
}

Result<MemoryInfo> parseMemInfo(std::string_view text) {
  MemoryInfo m;
  bool total = false;
  bool available = false;
  std::istringstream in{std::string(text)};
  std::string key;
  std::int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemTotal:") {
      m.totalMb = kb / 1024;
      total = true;
    } else if (key == "MemAvailable:") {
      m.availableMb = kb / 1024;
      available = true;
    }
  }
  if (!total || !available) {
    return Error(Errc::kParse, "/proc/meminfo lacks MemTotal or MemAvailable.");
  }
  return m;
}

json::Json heartbeatBody(double cpuIdle, const MemoryInfo& memory, int cpus,
                         const std::vector<DomainInfo>& domains,
                         const std::map<std::string, std::int64_t>& storageFreeGb) {
  std::int64_t vcpus = 0;
  std::int64_t running = 0;
  json::Json guests = json::Json::array();
  for (const auto& d : domains) {
    bool live = isRunningState(d.state);
    if (live) {
      vcpus += d.vcpus;
      ++running;
    }
    guests.push_back(
        json::Json{{"name", d.name},
                   {"desktop_id", d.desktopId ? json::Json(*d.desktopId) : json::Json()},
                   {"state", d.state},
                   {"running", live}});
  }
  json::Json storage = json::Json::object();
  for (const auto& [name, gb] : storageFreeGb)
    storage[name] = gb;
  return json::Json{{"cpus", cpus},
                    {"memory_mb", memory.totalMb},
                    {"free_memory_mb", memory.availableMb},
                    {"cpu_idle", cpuIdle},
                    {"allocated_vcpus", vcpus},
                    {"running_guests", running},
                    {"storage_free_gb", storage},
                    {"guests", guests}};
}

CpuSampler::CpuSampler(std::filesystem::path procStat) : path_(std::move(procStat)) {
  auto t = parseCpuTimes(slurp(path_));
  if (t)
    last_ = *t;
}

double CpuSampler::idleSinceLast() {
  auto now = parseCpuTimes(slurp(path_));
  if (!now)
    return 1.0;
  double idle = last_ ? idleBetween(*last_, *now) : 1.0;
  last_ = *now;
  return idle;
}

Result<MemoryInfo> readMemInfo(const std::filesystem::path& path) {
  return parseMemInfo(slurp(path));
}

}  // namespace aula::agent
