// aulactl workstations: the devices, template, size and users of each
// workstation (a host of kind workstation, see docs/workstation.md).
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/aulactl_internal.hpp"

namespace aula::ctl::detail {

namespace {

using json::Json;

std::string text(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// One record for people: the VM, who has it, its devices and its users.
void printRecord(const Json& w) {
  std::cout << fmt::format("Workstation {} (host {}, {})\n", text(w, "host"), text(w, "host_id"),
                           text(w, "host_state"));
  std::cout << fmt::format("VM:       {} vCPUs, {} MiB{}, disk from template {} ({})\n",
                           text(w, "vcpus"), text(w, "memory_mb"),
                           w.value("huge_pages", false) ? " in huge pages" : "",
                           text(w, "template"), text(w, "template_id"));
  if (w.value("hide_kvm", false)) {
    std::cout << "Hidden:   KVM's signature"
              << (w.value("hyperv_vendor_id", "").empty()
                      ? std::string()
                      : ", Hyper-V vendor id " + w.value("hyperv_vendor_id", ""))
              << "\n";
  }
  std::string access;
  for (const auto& a : w.value("access", Json::array()))
    access += (access.empty() ? "" : ", ") + a.get<std::string>();
  std::cout << "Users:    " << (access.empty() ? "nobody yet (--access)" : access) << "\n";
  std::cout << "Used by:  " << text(w, "claimed_by") << "\n";
  std::cout << "Devices:\n";
  printTable(w.value("devices", Json::array()),
             {"address", "kind", "vendor", "device", "rom", "inventory"});
  for (const auto& d : w.value("devices", Json::array())) {
    const auto seen = d.value("inventory", "");
    if (seen == "changed") {
      std::cout << fmt::format(
          "{} now reports other IDs than when it was chosen: the hardware changed. Check it with "
          "'aulactl hosts devices {}' and set the workstation again.\n",
          d.value("address", ""), text(w, "host_id"));
    } else if (seen == "missing") {
      std::cout << fmt::format(
          "{} is no longer in the host's report: the card was removed or moved to another "
          "slot.\n",
          d.value("address", ""));
    }
  }
}

}  // namespace

void addWorkstationCommands(CLI::App& app, const bool& asJson, int& exitCode) {
  auto* cmd = app.add_subcommand(
      "workstations",
      "workstations: the devices passed to each one's VM, its template and who may use it");
  cmd->require_subcommand(1);
  struct Args {
    std::string host, templateId, vcpus, memory, vendorId;
    std::vector<std::string> devices, roms, access;
    bool hugePages = false, hideKvm = false;
  };
  auto owned = std::make_shared<Args>();
  Args& opt = *owned;
  auto withSession = [&exitCode](std::function<int(const Session&)> f) {
    return withSavedSession(exitCode, std::move(f));
  };
  auto showRecord = [&asJson](const std::optional<http::Response>& r) {
    if (!r)
      return 1;
    auto j = json::parse(r->body);
    if (!j || !j->is_object()) {
      std::cout << r->body;
      return 0;
    }
    if (asJson)
      std::cout << j->dump(2) << "\n";
    else
      printRecord(*j);
    return 0;
  };

  cmd->add_subcommand("list", "every workstation, with who uses it now")
      ->callback(withSession([&asJson](const Session& s) {
        auto r = call(s, "GET", "/api/v1/workstations", std::nullopt);
        if (!r)
          return 1;
        auto j = json::parse(r->body);
        if (!j)
          return 1;
        for (auto& w : *j)
          w["devices"] = static_cast<std::int64_t>(w["devices"].size());
        output(*j, asJson,
               {"host_id", "host", "host_state", "template", "vcpus", "memory_mb", "devices",
                "access", "claimed_by"});
        return 0;
      }));

  auto* show = cmd->add_subcommand("show", "a workstation's VM, devices and users");
  show->add_option("host", opt.host, "host id")->required();
  show->callback(withSession([owned, showRecord](const Session& s) {
    return showRecord(call(
        s, "GET", "/api/v1/hosts/" + http::urlEncode(owned->host) + "/workstation", std::nullopt));
  }));

  auto* set = cmd->add_subcommand(
      "set",
      "set a workstation's whole record: the devices (from 'aulactl hosts devices ID'), the "
      "template its disk grows from, its size and who may use it");
  set->add_option("host", opt.host, "host id (of kind workstation)")->required();
  set->add_option("--device", opt.devices,
                  "a PCI address to pass through, such as 0000:01:00.0; repeat for each (at "
                  "least the GPU; its HDMI audio too)")
      ->required()
      ->delimiter(',');
  set->add_option("--rom", opt.roms, "ADDRESS=/path/on/the/workstation.rom: a ROM file for one");
  set->add_option("--template", opt.templateId, "the template id its disk grows from")->required();
  set->add_option("--vcpus", opt.vcpus, "vCPUs (default: the template's)");
  set->add_option("--memory-mb", opt.memory, "memory in MiB (default: the template's)");
  set->add_option("--access", opt.access,
                  "who may use it: user:<id>, group:<id>, category:<id> or everyone")
      ->delimiter(',');
  set->add_flag("--huge-pages", opt.hugePages, "back the VM's memory with huge pages");
  set->add_flag("--hide-kvm", opt.hideKvm, "hide KVM from guest drivers that refuse VMs");
  set->add_option("--hyperv-vendor-id", opt.vendorId,
                  "with --hide-kvm: a Hyper-V vendor id, 1 to 12 letters and digits");
  set->callback(withSession([owned, showRecord](const Session& s) {
    const Args& a = *owned;
    Json devices = Json::array();
    for (const auto& d : a.devices)
      devices.push_back(Json{{"address", d}});
    for (const auto& rom : a.roms) {
      const auto eq = rom.find('=');
      bool matched = false;
      for (auto& d : devices) {
        if (eq != std::string::npos && d["address"] == rom.substr(0, eq)) {
          d["rom"] = rom.substr(eq + 1);
          matched = true;
        }
      }
      if (!matched) {
        std::cerr << "aulactl: --rom " << rom
                  << " names no --device; write it as ADDRESS=/path, with ADDRESS as given to "
                     "--device.\n";
        return 2;
      }
    }
    Json body{{"devices", devices}, {"access", a.access}};
    auto number = [&body](const char* field, const std::string& value) {
      if (value.empty())
        return true;
      char* end = nullptr;
      const long long n = std::strtoll(value.c_str(), &end, 10);
      if (end != value.c_str() + value.size()) {
        std::cerr << "aulactl: '" << value << "' is not a whole number (" << field << ").\n";
        return false;
      }
      body[field] = n;
      return true;
    };
    if (!number("template_id", a.templateId) || !number("vcpus", a.vcpus) ||
        !number("memory_mb", a.memory)) {
      return 2;
    }
    if (a.hugePages)
      body["huge_pages"] = true;
    if (a.hideKvm)
      body["hide_kvm"] = true;
    if (!a.vendorId.empty())
      body["hyperv_vendor_id"] = a.vendorId;
    return showRecord(
        call(s, "PUT", "/api/v1/hosts/" + http::urlEncode(a.host) + "/workstation", body));
  }));

  auto* remove = cmd->add_subcommand(
      "remove", "make the host no workstation (its devices stay with the host)");
  remove->add_option("host", opt.host, "host id")->required();
  remove->callback(withSession([owned](const Session& s) {
    auto r = call(s, "DELETE", "/api/v1/hosts/" + http::urlEncode(owned->host) + "/workstation",
                  std::nullopt);
    if (!r)
      return 1;
    std::cout << "Done.\n";
    return 0;
  }));
}

}  // namespace aula::ctl::detail
