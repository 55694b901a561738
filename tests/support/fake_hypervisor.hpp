// A Hypervisor in memory for the agent's tests: the same interface the
// libvirt adapter implements, with domains in a map.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "aula/agent/hypervisor.hpp"
#include "aula/agent/service.hpp"

namespace aula::test {

using agent::desktopIdOfName;
using agent::DomainEventHandler;
using agent::DomainInfo;

// Domains in memory: started ones run with SPICE ports 5901 (plain) and
// 5951 (TLS). Thread-safe, since an agent's reporter lists domains on its
// own thread; tests may read and change `domains` while no agent runs.
class FakeHypervisor final : public agent::Hypervisor {
 public:
  struct Domain {
    std::string xml;
    std::string state = "shut off";
    std::string graphics;  // the last ticket update
  };

  Status defineAndStart(const std::string& xml) override {
    std::lock_guard lock(mutex);
    if (failStarts)
      return Error(Errc::kInvalidArgument, "libvirt refused the domain.");
    auto begin = xml.find("<name>") + 6;
    std::string name = xml.substr(begin, xml.find('<', begin) - begin);
    auto& d = domains[name];
    d.xml = xml;
    d.state = "running";
    ++starts;
    return {};
  }
  Status shutdown(const std::string& name) override {
    std::lock_guard lock(mutex);
    if (!domains.contains(name))
      return Error(Errc::kNotFound, "no domain");
    if (obeysShutdown)
      domains[name].state = "shut off";
    return {};
  }
  Status destroy(const std::string& name) override {
    std::lock_guard lock(mutex);
    if (!domains.contains(name))
      return Error(Errc::kNotFound, "no domain");
    domains[name].state = "shut off";
    ++destroys;
    return {};
  }
  Status undefine(const std::string& name) override {
    std::lock_guard lock(mutex);
    domains.erase(name);
    return {};
  }
  Status updateGraphics(const std::string& name, const std::string& xml) override {
    std::lock_guard lock(mutex);
    domains[name].graphics = xml;
    return {};
  }
  Result<std::vector<DomainInfo>> list() override {
    std::lock_guard lock(mutex);
    std::vector<DomainInfo> out;
    for (const auto& [name, d] : domains)
      out.push_back(*infoLocked(name));
    return out;
  }
  Result<DomainInfo> info(const std::string& name) override {
    std::lock_guard lock(mutex);
    return infoLocked(name);
  }
  Result<DomainInfo> infoLocked(const std::string& name) {
    auto it = domains.find(name);
    if (it == domains.end())
      return Error(Errc::kNotFound, "Cannot find the domain '" + name + "'.");
    DomainInfo i;
    i.name = name;
    i.state = it->second.state;
    i.desktopId = desktopIdOfName(name);
    i.vcpus = 2;
    i.memoryMb = 1024;
    if (i.state == "running") {
      i.spicePort = 5901;
      i.spiceTlsPort = 5951;
    }
    return i;
  }
  Status watch(DomainEventHandler h) override {
    std::lock_guard lock(mutex);
    handler = std::move(h);
    return {};
  }

  std::map<std::string, Domain> domains;
  bool obeysShutdown = true;
  bool failStarts = false;
  int starts = 0;
  int destroys = 0;
  DomainEventHandler handler;
  std::recursive_mutex mutex;
};

}  // namespace aula::test
