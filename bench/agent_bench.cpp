// The agent's figures on the real stack (libvirtd, aula-broker and aula-agent
// as processes; support/agent_stack): how long a desktop takes from the
// student's start request to a running guest, next to `virsh create` of the
// same domain XML and to the agent's own libvirt calls made in-process, in
// the same rounds; and what the heartbeat costs the agent, libvirtd and the
// broker with 0, 10 and 50 running guests, next to floors measured beside it.
// Prints Markdown tables that docs/performance.md cites; bench/run.sh builds
// and runs it. Needs root (qemu:///system); says so and exits 0 otherwise.
//
// The 50 guests are small diskless domains (64 MiB, q35, no disk, no
// network; they sit in SeaBIOS) that carry Aula's metadata for 50 desktops
// the broker knows, so the broker's side reconciles a host that runs 50 of
// its desktops, as in a classroom. Every guest the benchmark makes has the
// title kMarker; it removes them at the end, also after a failure, and
// removes leftovers of an interrupted run when it starts.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include "aula/agent/disks.hpp"
#include "aula/agent/domain_xml.hpp"
#include "aula/agent/enrolment.hpp"
#include "aula/agent/host_load.hpp"
#include "aula/agent/service.hpp"
#include "aula/common/http_client.hpp"
#include "aula/common/log.hpp"
#include "aula/common/process.hpp"

#include "figures.hpp"
#include "libvirt_hypervisor.hpp"
#include "support/agent_stack.hpp"
#include "support/libvirtd_fixture.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
namespace agent = aula::agent;
namespace test = aula::test;
using aula::json::Json;
using Clock = std::chrono::steady_clock;

// The title of every domain the benchmark defines: what cleanup looks for.
constexpr const char* kMarker = "aula-agent-bench";
constexpr const char* kLoadUser = "load";
constexpr int kHeartbeatIntervalSeconds = 10;  // agent.heartbeat_seconds' default
constexpr int kBrokerCpuRounds = 5;
constexpr int kLibvirtdBatch = 100;

struct Options {
  int rounds = 7;
  int heartbeats = 41;
  int guests = 50;
  bool skipStart = false;
  bool skipHeartbeat = false;
  int waitSeconds = 600;
};

std::atomic<bool> interrupted{false};

void checkInterrupted() {
  if (interrupted.load())
    throw std::runtime_error("Interrupted; cleaning up.");
}

template <typename T>
T must(aula::Result<T> result, std::string_view what) {
  if (!result)
    throw std::runtime_error(fmt::format("{}: {}", what, result.error().message()));
  return std::move(result).value();
}

void must(const aula::Status& status, std::string_view what) {
  if (!status)
    throw std::runtime_error(fmt::format("{}: {}", what, status.error().message()));
}

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double processCpuMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1000 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// user + system CPU of another process (all its threads), in ms; nullopt
// when it is gone. /proc counts in clock ticks (10 ms), so callers measure
// over batches of many requests.
std::optional<double> otherCpuMs(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos)
    return std::nullopt;
  std::istringstream fields(text.substr(close + 2));
  std::vector<std::string> f;
  for (std::string s; fields >> s;)
    f.push_back(s);
  if (f.size() < 13)
    return std::nullopt;
  // After the command: state is field 3, utime 14 and stime 15.
  double ticks = std::stod(f[11]) + std::stod(f[12]);
  return ticks * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The libvirtd serving qemu:///system, from its pid file.
std::optional<pid_t> libvirtdPid() {
  std::ifstream in("/run/libvirtd.pid");
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 1)
    return std::nullopt;
  std::ifstream comm(fmt::format("/proc/{}/comm", pid));
  std::string name;
  comm >> name;
  return name == "libvirtd" ? std::optional(pid) : std::nullopt;
}

// Median (min–max).
struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;

  static Spread of(std::vector<double> v) {
    if (v.empty())
      return {};
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v.front(), v.back()};
  }
  std::string text(int digits = 1) const {
    return fmt::format("{:.{}f} ({:.{}f}–{:.{}f})", median, digits, min, digits, max, digits);
  }
};

test::ApiResponse expect(test::ApiResponse r, long status, std::string_view what) {
  if (r.status != status)
    throw std::runtime_error(fmt::format("{}: {}", what, r.describe()));
  return r;
}

// virsh on qemu:///system; throws unless it succeeds.
std::string virshOk(std::vector<std::string> args) {
  std::string what = "virsh " + args.front();
  args.insert(args.begin(), {"virsh", "-c", test::Libvirtd::kUri});
  auto out = test::runProgram(std::move(args), std::chrono::seconds(120));
  if (!out.succeeded())
    throw std::runtime_error(fmt::format("{} failed: {}{}", what, out.out, out.err));
  return out.out;
}

// Destroys and undefines every domain titled kMarker (leftovers of an
// earlier run, or this run's). Best effort: it runs in destructors.
int sweepMarkedDomains() {
  int removed = 0;
  try {
    auto list =
        test::runProgram({"virsh", "-c", test::Libvirtd::kUri, "list", "--all", "--title"}).out;
    std::istringstream lines(list);
    for (std::string line; std::getline(lines, line);) {
      if (line.find(kMarker) == std::string::npos)
        continue;
      std::istringstream words(line);
      std::string id, name;
      words >> id >> name;
      test::virsh({"destroy", name});
      test::virsh({"undefine", name});
      ++removed;
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "agent_bench: cleanup: {}\n", e.what());
  }
  return removed;
}

// Every domain the benchmark made goes, however it ends.
struct SweepOnExit {
  ~SweepOnExit() { sweepMarkedDomains(); }
};

// Waits up to `limit` while a libvirtd that is running already holds
// domains: another engineer's tests, whose guests this run would slow down
// and whose desktop names ("aula-1", ...) the stack's own would meet. The
// number still there when it gives up.
int waitForQuietLibvirt(std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  while (true) {
    auto out = test::runProgram({"virsh", "-c", test::Libvirtd::kUri, "list", "--all", "--name"},
                                std::chrono::seconds(20));
    int domains = 0;
    std::istringstream names(out.out);
    for (std::string name; std::getline(names, name);)
      domains += name.empty() ? 0 : 1;
    if (!out.succeeded() || domains == 0 || Clock::now() >= deadline)
      return out.succeeded() ? domains : 0;
    fmt::print(stderr, "agent_bench: libvirtd runs {} domain(s) of someone else; waiting.\n",
               domains);
    std::this_thread::sleep_for(std::chrono::seconds(15));
    checkInterrupted();
  }
}

std::string loadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return fmt::format("{} {} {}", one, five, fifteen);
}

std::string utcNow() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char date[32];
  (void)std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &tm);
  return date;
}

// ---------------------------------------------------------------------------
// Start to running.

struct StartFigures {
  Spread broker;       // POST .../start until it answers running
  Spread virsh;        // virsh create + domstate until running
  Spread virshCreate;  // virsh create alone
  Spread direct;       // Hypervisor::defineAndStart in this process
  Spread extra;        // broker - direct, per round (the two are close in time)
  Spread overlay;      // Disks::createOverlay, as the agent makes the disk
  Spread define;       // virsh define --validate of the same XML
  Spread virshFloor;   // virsh domstate: one virsh run
  Spread apiCall;      // GET /api/v1/desktops/{id}, kept-alive HTTPS
  Spread newTls;       // a new TLS connection and GET /healthz
};

// The broker-started domain's XML, made into one virsh can create next to
// it: another name, no UUID, MAC or Aula metadata, and its own overlay.
std::string virshXml(std::string xml, const std::string& name, const fs::path& desktops,
                     const fs::path& overlay) {
  auto replaceBetween = [&](const std::string& open, const std::string& close,
                            const std::string& with) {
    auto a = xml.find(open);
    if (a == std::string::npos)
      return false;
    auto b = xml.find(close, a);
    if (b == std::string::npos)
      throw std::runtime_error("Unexpected domain XML: " + open + " is not closed.");
    xml.replace(a, b + close.size() - a, with);
    return true;
  };
  if (!replaceBetween("<name>", "</name>", fmt::format("<name>{}</name>", name)))
    throw std::runtime_error("The domain XML has no <name>.");
  replaceBetween("<uuid>", "</uuid>", "");
  replaceBetween("<metadata>", "</metadata>", "");
  while (replaceBetween("<mac address=", "/>", "")) {
  }
  auto at = xml.find("'" + desktops.string() + "/");
  if (at == std::string::npos)
    throw std::runtime_error("The domain XML has no disk under " + desktops.string() + ".");
  auto end = xml.find('\'', at + 1);
  xml.replace(at + 1, end - at - 1, overlay.string());
  return xml;
}

class StartBench {
 public:
  StartBench(test::AgentStack& stack, agent::Hypervisor& hypervisor, agent::Disks& disks,
             fs::path work)
      : stack_(stack), hypervisor_(hypervisor), disks_(disks), work_(std::move(work)) {}

  StartFigures run(int rounds) {
    // The broker's start comes first in round 1: the others copy its XML.
    // Then the order turns, so that none always finds the caches warm from
    // another.
    const std::vector<std::vector<int>> orders{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}};
    std::string xml;
    for (int i = 0; i < rounds; ++i) {
      checkInterrupted();
      for (int which : orders[static_cast<std::size_t>(i) % orders.size()]) {
        if (which == 0)
          broker_.push_back(brokerRound(i, xml));
        else if (which == 1)
          virsh_.push_back(virshRound(i, xml));
        else
          direct_.push_back(directRound(i, xml));
      }
      auto start = Clock::now();
      aula::http::Client fresh(aula::http::ClientOptions{.tls = {.caPem = stack_.caPem}});
      auto health = must(fresh.send({.url = stack_.url() + "/healthz"}), "GET /healthz");
      newTls_.push_back(msSince(start));
      if (health.status != 200)
        throw std::runtime_error(fmt::format("GET /healthz answered {}.", health.status));
      fmt::print(stderr,
                 "agent_bench: start round {}: broker+agent {:.0f} ms, virsh {:.0f} ms, "
                 "in-process {:.0f} ms\n",
                 i + 1, broker_.back(), virsh_.back(), direct_.back());
    }
    std::vector<double> extra;
    for (std::size_t i = 0; i < broker_.size(); ++i)
      extra.push_back(broker_[i] - direct_[i]);
    return {Spread::of(broker_), Spread::of(virsh_), Spread::of(virshCreate_),
            Spread::of(direct_), Spread::of(extra),  Spread::of(overlay_),
            Spread::of(define_), Spread::of(floor_), Spread::of(apiCall_),
            Spread::of(newTls_)};
  }

 private:
  double brokerRound(int i, std::string& xml) {
    auto& api = *stack_.api;
    auto made = expect(api.call("POST", "/api/v1/desktops", stack_.adminToken,
                                Json{{"name", fmt::format("start-{}", i)},
                                     {"template_id", stack_.templateId},
                                     {"owner_id", stack_.studentId},
                                     {"persistent", true}}),
                       201, "Creating a desktop");
    auto id = made.body["id"].get<std::int64_t>();
    auto name = fmt::format("aula-{}", id);
    auto start = Clock::now();
    auto started =
        api.call("POST", fmt::format("/api/v1/desktops/{}/start", id), stack_.studentToken);
    double ms = msSince(start);
    expect(started, 200, "Starting a desktop");
    auto state = test::domainState(name);
    if (started.body.value("state", "") != "running" || state != "running") {
      throw std::runtime_error(
          fmt::format("The desktop answered {} and libvirt says '{}'.", started.text, state));
    }
    start = Clock::now();
    expect(api.call("GET", fmt::format("/api/v1/desktops/{}", id), stack_.studentToken), 200,
           "Reading a desktop");
    apiCall_.push_back(msSince(start));
    xml = virshOk({"dumpxml", "--inactive", name});
    expect(api.call("POST", fmt::format("/api/v1/desktops/{}/stop?force=true", id),
                    stack_.studentToken),
           200, "Stopping a desktop");
    auto removed = api.call("DELETE", fmt::format("/api/v1/desktops/{}", id), stack_.adminToken);
    if (removed.status >= 300)
      throw std::runtime_error("Deleting a desktop: " + removed.describe());
    return ms;
  }

  // The broker's domain again, under another name on a fresh overlay (made
  // the agent's way, and timed), titled kMarker so that a failure leaves
  // nothing behind.
  std::string copyOf(const std::string& xml, const std::string& name, const std::string& rel) {
    auto start = Clock::now();
    auto disk = must(disks_.createOverlay("templates", "test.qcow2", "desktops", rel), "Overlay");
    overlay_.push_back(msSince(start));
    auto text = virshXml(xml, name, stack_.desktops, disk);
    text.insert(text.find("</name>") + 7, fmt::format("\n  <title>{}</title>", kMarker));
    return text;
  }

  double virshRound(int i, const std::string& xml) {
    auto name = fmt::format("agentbench-virsh-{}", i);
    auto rel = fmt::format("agent-bench/virsh-{}.qcow2", i);
    fs::path file = work_ / fmt::format("virsh-{}.xml", i);
    test::writeFile(file, copyOf(xml, name, rel));

    auto start = Clock::now();
    virshOk({"define", "--validate", file.string()});
    define_.push_back(msSince(start));
    virshOk({"undefine", name});

    start = Clock::now();
    virshOk({"create", file.string()});
    virshCreate_.push_back(msSince(start));
    while (test::domainState(name) != "running") {
      if (msSince(start) > 60000)
        throw std::runtime_error(name + " did not reach running within 60 s.");
    }
    double ms = msSince(start);
    start = Clock::now();
    virshOk({"domstate", name});
    floor_.push_back(msSince(start));
    virshOk({"destroy", name});
    must(disks_.deleteOverlay("desktops", rel), "Deleting an overlay");
    return ms;
  }

  // What the agent asks of libvirt, without the agent: define (validated)
  // and start over a connection that is open already.
  double directRound(int i, const std::string& xml) {
    auto name = fmt::format("agentbench-direct-{}", i);
    auto rel = fmt::format("agent-bench/direct-{}.qcow2", i);
    auto text = copyOf(xml, name, rel);
    auto start = Clock::now();
    auto started = hypervisor_.defineAndStart(text);
    double ms = msSince(start);
    if (!started) {
      // The adapter loses libvirt's reason for a failed start (see "Bugs
      // found" in docs/performance.md); virsh's own attempt prints it.
      throw std::runtime_error(fmt::format("Starting {} in-process: {} ({})", name,
                                           started.error().message(),
                                           test::virsh({"start", name})));
    }
    auto info = must(hypervisor_.info(name), "Reading the domain");
    if (info.state != "running")
      throw std::runtime_error(fmt::format("{} is {}, not running.", name, info.state));
    must(hypervisor_.destroy(name), "Destroying the domain");
    must(hypervisor_.undefine(name), "Undefining the domain");
    must(disks_.deleteOverlay("desktops", rel), "Deleting an overlay");
    return ms;
  }

  test::AgentStack& stack_;
  agent::Hypervisor& hypervisor_;
  agent::Disks& disks_;
  fs::path work_;
  std::vector<double> broker_, virsh_, virshCreate_, direct_, overlay_, define_, floor_, apiCall_,
      newTls_;
};

// ---------------------------------------------------------------------------
// Heartbeat.

// A small diskless guest that carries Aula's metadata of one desktop. The
// broker knows a guest's desktop by that metadata, not by the name; the
// name is not "aula-<id>" so that it cannot meet a desktop of another stack
// (a test's) on the same libvirtd, whose ids also count from 1.
std::string guestName(std::int64_t desktopId) {
  return fmt::format("aula-load-{}", desktopId);
}

std::string guestXml(std::int64_t desktopId) {
  return fmt::format(R"(<domain type='qemu'>
  <name>{4}</name>
  <title>{1}</title>
  <metadata>
    <aula:desktop xmlns:aula='{2}'>
      <aula:id>{0}</aula:id>
      <aula:owner>{3}</aula:owner>
    </aula:desktop>
  </metadata>
  <memory unit='MiB'>64</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <features><acpi/></features>
  <devices>
    <graphics type='spice' autoport='yes'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <video><model type='vga' vram='16384'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
)",
                     desktopId, kMarker, agent::kMetadataNamespace, kLoadUser,
                     guestName(desktopId));
}

struct AgentPhase {
  int guests = 0;          // ours, running
  std::size_t listed = 0;  // every domain libvirt listed (other users' too)
  std::size_t bodyBytes = 0;
  Spread wall;
  Spread cpu;
  double libvirtdCpuPerBeat = -1;  // ms; -1 when libvirtd's pid is unknown
  Spread listOnly;
  Spread virshList;
  double hostBusy = 0;   // share of the whole machine busy while idle, 0..1
  double guestsCpu = 0;  // our guests' QEMUs at rest, share of one CPU, 0..1
};

struct BrokerRow {
  std::string what;
  Spread wall;
  double cpuPerRequest = 0;  // the broker process, ms
  Spread clientCpu;          // the sender's (the agent's code, in this process), ms
  int batched = 0;           // requests the broker's CPU was measured over
};

struct HeartbeatFigures {
  std::vector<AgentPhase> phases;
  std::vector<BrokerRow> broker;
  int adopted = 0;  // of the guests, desktops the broker records as running on the host
};

class HeartbeatBench {
 public:
  HeartbeatBench(test::AgentStack& stack, agent::Hypervisor& hypervisor,
                 agent::AgentService& service, const Options& options)
      : stack_(stack), hypervisor_(hypervisor), service_(service), options_(options) {}

  HeartbeatFigures run() {
    HeartbeatFigures f;
    makeDesktops();
    std::vector<int> counts{0};
    if (options_.guests >= 20)
      counts.push_back(10);
    if (options_.guests > 0)
      counts.push_back(options_.guests);
    for (int count : counts) {
      startGuests(count);
      f.phases.push_back(agentPhase(count));
    }
    brokerSide(f);
    return f;
  }

 private:
  void makeDesktops() {
    auto& api = *stack_.api;
    auto categories =
        expect(api.call("GET", "/api/v1/categories", stack_.adminToken), 200, "Listing categories");
    auto category = categories.body[0]["id"];
    auto user = expect(api.call("POST", "/api/v1/users", stack_.adminToken,
                                Json{{"username", kLoadUser},
                                     {"role", "user"},
                                     {"category_id", category},
                                     {"password", "load-password-1"}}),
                       201, "Creating the load user");
    auto userId = user.body["id"].get<std::int64_t>();
    int n = options_.guests;
    expect(api.call("PUT", fmt::format("/api/v1/quotas/user:{}", userId), stack_.adminToken,
                    Json{{"desktops", n + 10},
                         {"running", n + 10},
                         {"vcpus", n + 10},
                         {"memory_mb", (n + 10) * 256},
                         {"disk_gb", (n + 10) * 2},
                         {"templates", 0}}),
           200, "Setting the load user's quota");
    for (int i = 0; i < n; ++i) {
      auto made = expect(api.call("POST", "/api/v1/desktops", stack_.adminToken,
                                  Json{{"name", fmt::format("load-{}", i)},
                                       {"template_id", stack_.templateId},
                                       {"owner_id", userId},
                                       {"persistent", true}}),
                         201, "Creating a load desktop");
      desktopIds_.push_back(made.body["id"].get<std::int64_t>());
    }
  }

  void startGuests(int count) {
    if (running_ < count) {
      fmt::print(stderr, "agent_bench: starting guests {}–{}.\n", running_ + 1, count);
    }
    while (running_ < count) {
      checkInterrupted();
      must(hypervisor_.defineAndStart(guestXml(desktopIds_[running_])), "Starting a small guest");
      ++running_;
    }
    // Let the new QEMUs finish starting before anything is timed.
    std::this_thread::sleep_for(std::chrono::seconds(count > 0 ? 5 : 1));
  }

  // Over a few seconds of doing nothing: the busy share of the whole machine
  // (everyone's), and the CPU our guests' QEMUs took, as a share of one CPU.
  void atRest(AgentPhase& p) {
    std::vector<pid_t> qemus;
    for (int i = 0; i < running_; ++i) {
      std::ifstream in(fmt::format("/run/libvirt/qemu/{}.pid", guestName(desktopIds_[i])));
      pid_t pid = 0;
      if (in >> pid)
        qemus.push_back(pid);
    }
    auto guestsCpu = [&] {
      double ms = 0;
      for (auto pid : qemus)
        ms += otherCpuMs(pid).value_or(0);
      return ms;
    };
    constexpr int kSeconds = 3;
    agent::HostLoad sampler;
    double before = guestsCpu();
    std::this_thread::sleep_for(std::chrono::seconds(kSeconds));
    p.guestsCpu = (guestsCpu() - before) / (kSeconds * 1000.0);
    p.hostBusy = 1.0 - sampler.idleSinceLast();
  }

  AgentPhase agentPhase(int count) {
    AgentPhase p;
    p.guests = count;
    atRest(p);
    std::vector<double> wall, cpu, listOnly, virshList;
    for (int i = 0; i < options_.heartbeats; ++i) {
      checkInterrupted();
      double c0 = processCpuMs();
      auto start = Clock::now();
      auto body = must(service_.heartbeat(), "AgentService::heartbeat()");
      wall.push_back(msSince(start));
      cpu.push_back(processCpuMs() - c0);
      p.bodyBytes = aula::proto::toJson(body).dump().size();
      p.listed = body.guests ? body.guests->size() : 0;

      start = Clock::now();
      must(hypervisor_.list(), "Hypervisor::list()");
      listOnly.push_back(msSince(start));

      start = Clock::now();
      virshOk({"list", "--all"});
      virshList.push_back(msSince(start));
    }
    p.wall = Spread::of(wall);
    p.cpu = Spread::of(cpu);
    // libvirtd's CPU, which /proc gives in ticks: over a batch of heartbeats
    // back to back.
    if (auto libvirtd = libvirtdPid()) {
      auto d0 = otherCpuMs(*libvirtd);
      for (int i = 0; i < kLibvirtdBatch; ++i)
        must(service_.heartbeat(), "AgentService::heartbeat()");
      auto d1 = otherCpuMs(*libvirtd);
      if (d0 && d1)
        p.libvirtdCpuPerBeat = (*d1 - *d0) / kLibvirtdBatch;
    }
    p.listOnly = Spread::of(listOnly);
    p.virshList = Spread::of(virshList);
    fmt::print(stderr, "agent_bench: heartbeat with {} guests: {} ms\n", count, p.wall.text());
    return p;
  }

  // How many of the load desktops the broker records as running on the host.
  int adopted() {
    int n = 0;
    for (auto id : desktopIds_) {
      auto d = stack_.admin("GET", fmt::format("/api/v1/desktops/{}", id));
      if (d.value("state", "") == "running" && d.contains("host_id") &&
          d["host_id"] == stack_.hostId)
        ++n;
    }
    return n;
  }

  void brokerSide(HeartbeatFigures& f) {
    Json full = aula::proto::toJson(must(service_.heartbeat(), "AgentService::heartbeat()"));
    Json loadOnly = full;
    loadOnly.erase("guests");
    // The first heartbeat with the guests adopts their desktops; from then on
    // each one is the steady state of a host that runs them.
    must(agent::postToBroker(stack_.agentState, stack_.url(), "/api/v1/agent/heartbeat", full),
         "A heartbeat");
    f.adopted = adopted();

    auto cert = test::readFile(stack_.agentState / "agent.crt");
    auto key = test::readFile(stack_.agentState / "agent.key");
    aula::http::Client kept(aula::http::ClientOptions{
        .tls = {.caPem = stack_.caPem, .clientCertPem = cert, .clientKeyPem = key}});
    std::string url = stack_.url() + "/api/v1/agent/heartbeat";
    pid_t broker = stack_.broker->pid();

    struct Series {
      std::string what;
      int batch;  // requests per CPU batch: enough clock ticks (10 ms) to count
      std::function<void()> send;
      std::vector<double> wall;
      std::vector<double> clientCpu;
      double brokerCpuMs = 0;
      int batched = 0;
    };
    auto post = [&](const Json& body) {
      return [&, text = body.dump()] {
        auto r = must(kept.postJson(url, text), "POST /api/v1/agent/heartbeat");
        if (r.status != 204 && r.status != 200)
          throw std::runtime_error(fmt::format("The heartbeat answered {}: {}", r.status, r.body));
      };
    };
    auto fresh = [&](const Json& body) {
      return [&, body] {
        must(agent::postToBroker(stack_.agentState, stack_.url(), "/api/v1/agent/heartbeat", body),
             "A heartbeat");
      };
    };
    std::vector<Series> series;
    series.push_back({fmt::format("{} guests, new connection (`postToBroker`, a one-off heartbeat)",
                                  options_.guests),
                      40, fresh(full)});
    series.push_back({"load only, no guest list, new connection: floor", 40, fresh(loadOnly)});
    series.push_back(
        {fmt::format("{} guests, kept-alive connection", options_.guests), 400, post(full)});
    series.push_back({"load only, kept-alive connection: floor", 400, post(loadOnly)});
    // Wall time per request, the four interleaved.
    for (int i = 0; i < options_.heartbeats; ++i) {
      checkInterrupted();
      for (auto& s : series) {
        double own = processCpuMs();
        auto start = Clock::now();
        s.send();
        s.wall.push_back(msSince(start));
        s.clientCpu.push_back(processCpuMs() - own);
      }
    }
    // The broker's CPU, which /proc gives in ticks: over batches of
    // requests, the four series taking turns.
    for (int round = 0; round < kBrokerCpuRounds; ++round) {
      for (auto& s : series) {
        checkInterrupted();
        auto c0 = otherCpuMs(broker);
        for (int k = 0; k < s.batch; ++k)
          s.send();
        auto c1 = otherCpuMs(broker);
        if (!c0 || !c1)
          throw std::runtime_error("aula-broker is gone.");
        s.brokerCpuMs += *c1 - *c0;
        s.batched += s.batch;
      }
    }
    for (auto& s : series) {
      f.broker.push_back({s.what, Spread::of(s.wall), s.brokerCpuMs / s.batched,
                          Spread::of(s.clientCpu), s.batched});
    }
  }

  test::AgentStack& stack_;
  agent::Hypervisor& hypervisor_;
  agent::AgentService& service_;
  Options options_;
  std::vector<std::int64_t> desktopIds_;
  int running_ = 0;
};

// ---------------------------------------------------------------------------
// Output.

double share(double cpuMsPerBeat) {
  return cpuMsPerBeat / (kHeartbeatIntervalSeconds * 1000.0) * 100;
}

void printStart(const Options& o, const StartFigures& s) {
  fmt::print("### Start to running, {} rounds, the order turning each round\n\n", o.rounds);
  fmt::print("| figure | ms, median (min–max) | ratio |\n|---|---:|---:|\n");
  fmt::print(
      "| broker + agent: the student's `POST /api/v1/desktops/{{id}}/start` until it answers "
      "`running` | {} | **{:.2f}** × virsh |\n",
      s.broker.text(), s.broker.median / s.virsh.median);
  fmt::print(
      "| `virsh create` of the same XML (new name, fresh overlay) until `virsh domstate` says "
      "running | {} | 1 |\n",
      s.virsh.text());
  fmt::print("| of which `virsh create` alone | {} | |\n", s.virshCreate.text());
  fmt::print(
      "| libvirt in-process: `defineAndStart` (define with validation, then start, on an open "
      "connection), as the agent calls it | {} | broker + agent = **{:.2f}** × this |\n",
      s.direct.text(), s.broker.median / s.direct.median);
  fmt::print(
      "| broker + agent minus libvirt in-process, per round (median of the {} differences) | {} "
      "| |\n",
      o.rounds, s.extra.text());
  fmt::print("| *parts of it, same run:* | | |\n");
  fmt::print(
      "| overlay: `Disks::createOverlay` (qemu-img), as the agent makes a first start's disk | {} "
      "| |\n",
      s.overlay.text());
  fmt::print("| `virsh define --validate` of the same XML (then undefined) | {} | |\n",
             s.define.text());
  fmt::print("| `virsh domstate`: one virsh run, the floor of any virsh command | {} | |\n",
             s.virshFloor.text());
  fmt::print("| `GET /api/v1/desktops/{{id}}` as the student, kept-alive HTTPS | {} | |\n",
             s.apiCall.text());
  fmt::print("| a new TLS connection to the broker and `GET /healthz` | {} | |\n\n",
             s.newTls.text());
}

void printHeartbeat(const Options& o, const HeartbeatFigures& f) {
  const AgentPhase& zero = f.phases.front();
  fmt::print("### Heartbeat, the agent's side ({} heartbeats per row)\n\n", o.heartbeats);
  fmt::print(
      "| running guests (domains listed) | `heartbeat()` wall, ms | agent CPU, ms | libvirtd CPU, "
      "ms (over 100) | `list()` alone, ms | `virsh list --all`, ms | heartbeat / virsh list | "
      "heartbeat / "
      "0 guests | body | guests' QEMUs at rest, % of one CPU | machine busy, all users |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& p : f.phases) {
    fmt::print(
        "| {} ({}) | {} | {} | {} | {} | {} | **{:.2f}** | **{:.2f}** | {} B | {:.1f} % | {:.0f} % "
        "|\n",
        p.guests, p.listed, p.wall.text(), p.cpu.text(2),
        p.libvirtdCpuPerBeat < 0 ? std::string("n/a") : fmt::format("{:.1f}", p.libvirtdCpuPerBeat),
        p.listOnly.text(), p.virshList.text(), p.wall.median / p.virshList.median,
        p.wall.median / zero.wall.median, p.bodyBytes, p.guestsCpu * 100, p.hostBusy * 100);
  }
  fmt::print("\n");

  fmt::print(
      "### Heartbeat, the broker's side: `POST /api/v1/agent/heartbeat` with the agent's "
      "certificate ({} each, interleaved)\n\n",
      o.heartbeats);
  fmt::print("{} of the {} guests' desktops recorded by the broker as running on the host.\n\n",
             f.adopted, o.guests);
  fmt::print(
      "| heartbeat | wall, ms, median (min–max) | broker CPU per heartbeat, ms (over N) | sender "
      "CPU, ms | ratio (wall) |\n|---|---:|---:|---:|---:|\n");
  for (std::size_t i = 0; i < f.broker.size(); ++i) {
    const auto& r = f.broker[i];
    bool floor = i % 2 == 1;
    std::string ratio =
        floor ? "1"
              : fmt::format("**{:.2f}** × floor", r.wall.median / f.broker[i + 1].wall.median);
    fmt::print("| {} | {} | {:.2f} ({}) | {} | {} |\n", r.what, r.wall.text(), r.cpuPerRequest,
               r.batched, r.clientCpu.text(2), ratio);
  }
  const AgentPhase& last = f.phases.back();
  double send = f.broker.front().clientCpu.median;
  double perHost = f.broker.front().cpuPerRequest;
  fmt::print(
      "\nAt the default interval ({} s), a host with {} guests spends on heartbeats: the agent "
      "**{:.3f} %** of one CPU (`heartbeat()` {:.2f} ms + sending {:.2f} ms each), libvirtd {}; "
      "the broker **{:.3f} %** per host, **{:.1f} %** for 100 such hosts.\n\n",
      kHeartbeatIntervalSeconds, last.guests, share(last.cpu.median + send), last.cpu.median, send,
      last.libvirtdCpuPerBeat < 0 ? std::string("(not measured)")
                                  : fmt::format("**{:.3f} %**", share(last.libvirtdCpuPerBeat)),
      share(perHost), share(perHost) * 100);
}

}  // namespace

int runBench(int argc, char** argv) {
  Options options;
  CLI::App app{
      "Measures a desktop's start through broker and agent next to virsh, and the heartbeat's "
      "cost with running guests; prints Markdown tables."};
  app.add_option("--rounds", options.rounds, "desktop starts (and virsh creates)")
      ->check(CLI::Range(1, 100));
  app.add_option("--heartbeats", options.heartbeats, "heartbeats timed per row")
      ->check(CLI::Range(1, 1000));
  app.add_option("--guests", options.guests, "small guests for the largest heartbeat")
      ->check(CLI::Range(0, 200));
  app.add_flag("--skip-start", options.skipStart, "do not measure starts");
  app.add_flag("--skip-heartbeat", options.skipHeartbeat, "do not measure heartbeats");
  app.add_option("--wait", options.waitSeconds,
                 "seconds to wait for a libvirtd that runs others' domains to become idle")
      ->check(CLI::Range(0, 7200));
  CLI11_PARSE(app, argc, argv);

  std::string command = "agent_bench";
  for (int i = 1; i < argc; ++i)
    command += fmt::format(" {}", argv[i]);
  fmt::print("## Agent benchmark (broker + agent, libvirt)\n\n");
  std::string why;
  if (!test::Libvirtd::available(&why)) {
    fmt::print("Skipped: {}\n", why);
    return 0;
  }
  aula::log::setLevel(aula::log::Level::kWarn);
  (void)std::signal(SIGINT, [](int) { interrupted.store(true); });
  (void)std::signal(SIGTERM, [](int) { interrupted.store(true); });
  try {
    if (int left = sweepMarkedDomains(); left > 0)
      fmt::print(stderr, "agent_bench: removed {} guests an earlier run left.\n", left);
    int foreign = waitForQuietLibvirt(std::chrono::seconds(options.waitSeconds));
    std::string loadBefore = loadAverage();
    std::string date = utcNow();
    fmt::print(stderr, "agent_bench: building the stack (libvirtd, broker, agent).\n");
    test::AgentStack stack(test::AgentStackOptions{.heartbeatSeconds = kHeartbeatIntervalSeconds});
    SweepOnExit sweep;
    fs::path work = stack.desktops / "agent-bench";
    fs::create_directories(work);

    aula::process::SystemRunner runner;
    agent::Disks disks({{"templates", stack.templates}, {"desktops", stack.desktops}}, runner);
    auto hypervisor =
        must(agent::LibvirtHypervisor::open(test::Libvirtd::kUri), "Connecting to libvirt");
    StartFigures start;
    if (!options.skipStart)
      start = StartBench(stack, *hypervisor, disks, work).run(options.rounds);

    HeartbeatFigures heartbeat;
    if (!options.skipHeartbeat) {
      agent::ServiceOptions serviceOptions;
      serviceOptions.settings.storage = {{"templates", stack.templates},
                                         {"desktops", stack.desktops}};
      serviceOptions.publicHost = "127.0.0.1";
      agent::AgentService service(serviceOptions, *hypervisor, disks);
      heartbeat = HeartbeatBench(stack, *hypervisor, service, options).run();
    }

    fmt::print("- command: `{}`\n", command);
    fmt::print("- date: {}; nproc {}; load average before {}, after {}\n", date,
               std::thread::hardware_concurrency(), loadBefore, loadAverage());
    fmt::print(
        "- libvirtd {} ({}), guests under TCG (domain type 'qemu'); broker on SQLite; the "
        "agent's heartbeat every {} s meanwhile\n",
        stack.libvirtd->startedDaemon() ? "started for the run" : "already running, borrowed",
        test::Libvirtd::kUri, kHeartbeatIntervalSeconds);
    if (foreign > 0) {
      fmt::print(
          "- **libvirtd held {} domain(s) of another user when the run began**, after "
          "waiting {} s: they share the machine and appear in the domain counts\n",
          foreign, options.waitSeconds);
    }
    fmt::print(
        "- desktop: the test guest as template (1 vCPU, 256 MiB, qcow2 overlay); heartbeat "
        "guests: diskless, 64 MiB, q35, SeaBIOS, SPICE, with Aula's metadata\n\n");
    if (!options.skipStart)
      printStart(options, start);
    if (!options.skipHeartbeat)
      printHeartbeat(options, heartbeat);
  } catch (const std::exception& e) {
    fmt::print(stderr, "agent_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  return aula::bench::guardedMain("agent_bench", [&] { return runBench(argc, argv); });
}
