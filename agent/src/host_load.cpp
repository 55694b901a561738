// The host's load (see host_load.hpp).
#include "aula/agent/host_load.hpp"

#include <fstream>
#include <sstream>
#include <utility>

#include <fmt/format.h>

#include "aula/common/file.hpp"

namespace aula::agent {

namespace {

// A /proc file; empty when it cannot be read (the parsers then refuse it).
std::string readProc(const std::filesystem::path& path) {
  return file::readFile(path).valueOr("");
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

int parseCpuCount(std::string_view procStat) {
  int count = 0;
  for (std::size_t at = 0; at < procStat.size();) {
    auto end = procStat.find('\n', at);
    auto line =
        procStat.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at);
    if (line.size() > 3 && line.starts_with("cpu") && line[3] >= '0' && line[3] <= '9')
      ++count;
    if (end == std::string_view::npos)
      break;
    at = end + 1;
  }
  return count > 0 ? count : 1;
}

proto::Heartbeat heartbeatOf(double cpuIdle, const MemoryInfo& memory, int cpus,
                             const std::vector<DomainInfo>& domains,
                             const std::map<std::string, std::int64_t>& storageFreeGb) {
  proto::Heartbeat h;
  h.cpus = cpus;
  h.memoryMb = memory.totalMb;
  h.freeMemoryMb = memory.availableMb;
  h.cpuIdle = cpuIdle;
  h.storageFreeGb = storageFreeGb;
  h.guests.emplace();
  for (const auto& d : domains) {
    bool live = isRunningState(d.state);
    if (live) {
      h.allocatedVcpus += d.vcpus;
      ++h.runningGuests;
    }
    h.guests->push_back(proto::GuestReport{
        .name = d.name, .desktopId = d.desktopId, .state = d.state, .running = live});
  }
  return h;
}

HostLoad::HostLoad(std::filesystem::path root) : root_(std::move(root)) {
  auto t = parseCpuTimes(readProc(root_ / "proc/stat"));
  if (t)
    last_ = *t;
}

double HostLoad::idleSinceLast() {
  auto now = parseCpuTimes(readProc(root_ / "proc/stat"));
  if (!now)
    return 1.0;
  double idle = last_ ? idleBetween(*last_, *now) : 1.0;
  last_ = *now;
  return idle;
}

Result<MemoryInfo> HostLoad::memory() const {
  return parseMemInfo(readProc(root_ / "proc/meminfo"));
}

int HostLoad::cpusOnline() const {
  return parseCpuCount(readProc(root_ / "proc/stat"));
}

}  // namespace aula::agent
