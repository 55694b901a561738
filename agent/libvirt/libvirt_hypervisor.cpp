// The libvirt adapter (see libvirt_hypervisor.hpp).
#include "libvirt_hypervisor.hpp"

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <thread>

#include <fmt/format.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "aula/agent/domain_xml.hpp"
#include "aula/common/callback_guard.hpp"

namespace aula::agent {
namespace {

struct ConnectCloser {
  void operator()(virConnectPtr conn) const { virConnectClose(conn); }
};
struct DomainFreer {
  void operator()(virDomainPtr dom) const { virDomainFree(dom); }
};
struct CharFreer {
  void operator()(char* text) const { std::free(text); }  // NOLINT: libvirt allocates with malloc
};
using ConnectPtr = std::unique_ptr<virConnect, ConnectCloser>;
using DomainPtr = std::unique_ptr<virDomain, DomainFreer>;
using CharPtr = std::unique_ptr<char, CharFreer>;

// libvirt's default handler prints every error to stderr; ours are read
// from virGetLastError into Errors instead.
void quietErrorHandler(void* /*userData*/, virErrorPtr /*error*/) {}

void installQuietHandler() {
  static std::once_flag once;
  std::call_once(once, [] { virSetErrorFunc(nullptr, quietErrorHandler); });
}

Errc errcOf(int code) {
  switch (code) {
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_DOMAIN_METADATA:
      return Errc::kNotFound;
    case VIR_ERR_OPERATION_INVALID:
      return Errc::kConflict;
    case VIR_ERR_XML_ERROR:
    case VIR_ERR_XML_DETAIL:
    case VIR_ERR_XML_INVALID_SCHEMA:
    case VIR_ERR_INVALID_ARG:
    case VIR_ERR_CONFIG_UNSUPPORTED:
      return Errc::kInvalidArgument;
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_SYSTEM_ERROR:
    case VIR_ERR_RPC:
    case VIR_ERR_AUTH_FAILED:
      return Errc::kUnavailable;
    case VIR_ERR_OPERATION_TIMEOUT:
      return Errc::kTimeout;
    default:
      return Errc::kInternal;
  }
}

// The error of the libvirt call that just failed on this thread, as one
// sentence: "<what>: <libvirt's message>."
Error lastError(std::string_view what) {
  virErrorPtr err = virGetLastError();
  int code = err != nullptr ? err->code : VIR_ERR_INTERNAL_ERROR;
  std::string message =
      err != nullptr && err->message != nullptr ? err->message : "libvirt gave no reason";
  while (!message.empty() && (message.back() == '.' || message.back() == '\n')) {
    message.pop_back();
  }
  return Error(errcOf(code), fmt::format("{}: {}.", what, message), code);
}

std::string stateName(int state) {
  switch (state) {
    case VIR_DOMAIN_RUNNING:
      return "running";
    case VIR_DOMAIN_BLOCKED:
      return "blocked";
    case VIR_DOMAIN_PAUSED:
      return "paused";
    case VIR_DOMAIN_SHUTDOWN:
      return "shutting down";
    case VIR_DOMAIN_SHUTOFF:
      return "shut off";
    case VIR_DOMAIN_CRASHED:
      return "crashed";
    case VIR_DOMAIN_PMSUSPENDED:
      return "suspended";
    default:
      return "no state";
  }
}

// The value of attribute `name` in a start tag, or "" when absent.
std::string attribute(std::string_view tag, std::string_view name) {
  for (char quote : {'\'', '"'}) {
    std::string needle = fmt::format(" {}={}", name, quote);
    auto at = tag.find(needle);
    if (at != std::string_view::npos) {
      auto begin = at + needle.size();
      auto end = tag.find(quote, begin);
      if (end != std::string_view::npos) {
        return std::string(tag.substr(begin, end - begin));
      }
    }
  }
  return {};
}

int toPort(const std::string& text) {
  if (text.empty() || text.size() > 5 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return -1;
  }
  int port = std::stoi(text);
  return port > 0 && port <= 65535 ? port : -1;
}

// libvirt's event loop: one per process, on a thread of its own, started
// before the first connection opens (the remote driver registers its socket
// and keepalive timer with it at connect time). It runs until the process
// ends.
void startEventLoop() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (virEventRegisterDefaultImpl() < 0) {
      return;  // open() still works; watch() then reports no events
    }
    std::thread([] {
      while (true) {
        if (virEventRunDefaultImpl() < 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    }).detach();
  });
}

// A lifecycle event in Aula's words; kind empty for events Aula ignores
// (suspend, resume, define, undefine, ...).
DomainEvent describeEvent(const char* name, int event, int detail) {
  DomainEvent out;
  out.name = name != nullptr ? name : "";
  switch (event) {
    case VIR_DOMAIN_EVENT_STARTED:
      out.kind = "started";
      out.detail = detail == VIR_DOMAIN_EVENT_STARTED_BOOTED     ? "booted"
                   : detail == VIR_DOMAIN_EVENT_STARTED_RESTORED ? "restored"
                   : detail == VIR_DOMAIN_EVENT_STARTED_MIGRATED ? "migrated"
                                                                 : "started";
      break;
    case VIR_DOMAIN_EVENT_STOPPED:
      switch (detail) {
        case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
          out.kind = "shutdown";
          out.detail = "the guest powered off";
          break;
        case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
          out.kind = "crashed";
          out.detail = "the guest crashed";
          break;
        case VIR_DOMAIN_EVENT_STOPPED_FAILED:
          out.kind = "crashed";
          out.detail = "QEMU failed";
          break;
        case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
          out.kind = "stopped";
          out.detail = "powered off from the host";
          break;
        default:
          out.kind = "stopped";
          out.detail = "stopped";
          break;
      }
      break;
    case VIR_DOMAIN_EVENT_CRASHED:
      out.kind = "crashed";
      out.detail = "the guest panicked";
      break;
    default:
      break;
  }
  return out;
}

}  // namespace

SpicePorts parseSpicePorts(const std::string& domainXml) {
  SpicePorts ports;
  for (std::string_view type : {"type='spice'", "type=\"spice\""}) {
    auto at = domainXml.find(fmt::format("<graphics {}", type));
    if (at == std::string::npos) {
      continue;
    }
    auto end = domainXml.find('>', at);
    std::string_view tag = std::string_view(domainXml).substr(at, end - at);
    ports.port = toPort(attribute(tag, "port"));
    ports.tlsPort = toPort(attribute(tag, "tlsPort"));
    break;
  }
  return ports;
}

std::optional<std::int64_t> parseDesktopId(const std::string& metadataXml) {
  // libvirt re-serializes the element with its own prefix, so match any
  // prefix (or none) before "id>".
  std::size_t from = 0;
  while (true) {
    auto at = metadataXml.find("id>", from);
    if (at == std::string::npos || at == 0) {
      return std::nullopt;
    }
    char before = metadataXml[at - 1];
    if (before == '<' || before == ':') {
      std::size_t begin = at + 3;
      std::size_t end = metadataXml.find('<', begin);
      std::string digits = metadataXml.substr(begin, end - begin);
      if (!digits.empty() && digits.size() <= 18 &&
          digits.find_first_not_of("0123456789") == std::string::npos) {
        return std::stoll(digits);
      }
      return std::nullopt;
    }
    from = at + 3;
  }
}

struct LibvirtHypervisor::Impl {
  ConnectPtr conn;
  std::mutex handlerMutex;
  DomainEventHandler handler;
  int callbackId = -1;

  static int onLifecycle(virConnectPtr /*conn*/, virDomainPtr dom, int event, int detail,
                         void* opaque) noexcept {
    return guardCallback("libvirt lifecycle event", 0, [&] {
      auto* self = static_cast<Impl*>(opaque);
      DomainEvent e = describeEvent(virDomainGetName(dom), event, detail);
      if (e.kind.empty()) {
        return 0;
      }
      std::lock_guard lock(self->handlerMutex);
      if (self->handler) {
        self->handler(e);
      }
      return 0;
    });
  }

  ~Impl() {
    if (callbackId >= 0 && conn) {
      virConnectDomainEventDeregisterAny(conn.get(), callbackId);
    }
  }

  Result<DomainPtr> lookup(const std::string& name) {
    DomainPtr dom(virDomainLookupByName(conn.get(), name.c_str()));
    if (!dom) {
      return lastError(fmt::format("Cannot find the domain '{}'", name));
    }
    return dom;
  }

  Result<DomainInfo> describe(virDomainPtr dom) {
    DomainInfo info;
    const char* name = virDomainGetName(dom);
    info.name = name != nullptr ? name : "";
    int state = 0;
    int reason = 0;
    if (virDomainGetState(dom, &state, &reason, 0) < 0) {
      return lastError(fmt::format("Cannot read the state of the domain '{}'", info.name));
    }
    info.state = stateName(state);
    virDomainInfo basics{};
    if (virDomainGetInfo(dom, &basics) == 0) {
      info.vcpus = basics.nrVirtCpu;
      info.memoryMb = static_cast<std::int64_t>(basics.maxMem / 1024);
    }
    CharPtr metadata(virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT,
                                          std::string(kMetadataNamespace).c_str(), 0));
    if (metadata) {
      info.desktopId = parseDesktopId(metadata.get());
    } else {
      virErrorPtr err = virGetLastError();
      if (err == nullptr || err->code != VIR_ERR_NO_DOMAIN_METADATA) {
        return lastError(fmt::format("Cannot read Aula's metadata of the domain '{}'", info.name));
      }
    }
    if (state == VIR_DOMAIN_RUNNING || state == VIR_DOMAIN_PAUSED || state == VIR_DOMAIN_BLOCKED) {
      CharPtr xml(virDomainGetXMLDesc(dom, 0));
      if (!xml) {
        return lastError(fmt::format("Cannot read the live XML of the domain '{}'", info.name));
      }
      SpicePorts ports = parseSpicePorts(xml.get());
      info.spicePort = ports.port;
      info.spiceTlsPort = ports.tlsPort;
    }
    return info;
  }
};

LibvirtHypervisor::LibvirtHypervisor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LibvirtHypervisor::~LibvirtHypervisor() = default;

Result<std::unique_ptr<LibvirtHypervisor>> LibvirtHypervisor::open(const std::string& uri) {
  installQuietHandler();
  startEventLoop();
  ConnectPtr conn(virConnectOpen(uri.c_str()));
  if (!conn) {
    Error error = lastError(fmt::format("Cannot connect to libvirt at '{}'", uri));
    return Error(Errc::kUnavailable, error.message(), error.native());
  }
  auto impl = std::make_unique<Impl>();
  impl->conn = std::move(conn);
  return std::unique_ptr<LibvirtHypervisor>(new LibvirtHypervisor(std::move(impl)));
}

Status LibvirtHypervisor::defineAndStart(const std::string& xml) {
  DomainPtr dom(
      virDomainDefineXMLFlags(impl_->conn.get(), xml.c_str(), VIR_DOMAIN_DEFINE_VALIDATE));
  if (!dom) {
    return lastError("Cannot define a domain from its XML");
  }
  // Read the name before: every libvirt call, virDomainGetName too, clears
  // the thread's last error, which lastError() then reads.
  const char* raw = virDomainGetName(dom.get());
  std::string name = raw != nullptr ? raw : "?";
  if (virDomainCreate(dom.get()) < 0) {
    return lastError(fmt::format("Cannot start the domain '{}'", name));
  }
  return okStatus();
}

Status LibvirtHypervisor::shutdown(const std::string& name) {
  DomainPtr dom = AULA_TRY(impl_->lookup(name));
  if (virDomainShutdown(dom.get()) < 0) {
    return lastError(fmt::format("Cannot shut down the domain '{}'", name));
  }
  return okStatus();
}

Status LibvirtHypervisor::destroy(const std::string& name) {
  DomainPtr dom = AULA_TRY(impl_->lookup(name));
  if (virDomainDestroy(dom.get()) < 0) {
    return lastError(fmt::format("Cannot destroy the domain '{}'", name));
  }
  return okStatus();
}

Status LibvirtHypervisor::undefine(const std::string& name) {
  DomainPtr dom = AULA_TRY(impl_->lookup(name));
  unsigned int flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                       VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
  if (virDomainUndefineFlags(dom.get(), flags) < 0) {
    return lastError(fmt::format("Cannot undefine the domain '{}'", name));
  }
  return okStatus();
}

Status LibvirtHypervisor::updateGraphics(const std::string& name, const std::string& xml) {
  DomainPtr dom = AULA_TRY(impl_->lookup(name));
  if (virDomainUpdateDeviceFlags(dom.get(), xml.c_str(), VIR_DOMAIN_AFFECT_LIVE) < 0) {
    return lastError(fmt::format("Cannot change the SPICE ticket of the domain '{}'", name));
  }
  return okStatus();
}

Result<std::vector<DomainInfo>> LibvirtHypervisor::list() {
  virDomainPtr* raw = nullptr;
  int count = virConnectListAllDomains(impl_->conn.get(), &raw, 0);
  if (count < 0) {
    return lastError("Cannot list the domains");
  }
  // Own every handle before anything can return early.
  std::vector<DomainPtr> domains;
  domains.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    domains.emplace_back(raw[i]);  // NOLINT: libvirt's array
  }
  std::free(raw);  // NOLINT: libvirt allocates with malloc
  std::vector<DomainInfo> infos;
  for (const auto& dom : domains) {
    auto info = impl_->describe(dom.get());
    if (!info.ok()) {
      // A domain that vanished between listing and reading is simply gone.
      if (info.error().code() == Errc::kNotFound) {
        continue;
      }
      return std::move(info).error();
    }
    infos.push_back(std::move(info).value());
  }
  return infos;
}

Result<DomainInfo> LibvirtHypervisor::info(const std::string& name) {
  DomainPtr dom = AULA_TRY(impl_->lookup(name));
  return impl_->describe(dom.get());
}

Status LibvirtHypervisor::watch(DomainEventHandler handler) {
  {
    std::lock_guard lock(impl_->handlerMutex);
    impl_->handler = std::move(handler);
  }
  if (impl_->callbackId >= 0) {
    return okStatus();
  }
  int id =
      virConnectDomainEventRegisterAny(impl_->conn.get(), nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                       reinterpret_cast<virConnectDomainEventGenericCallback>(
                                           reinterpret_cast<void (*)()>(&Impl::onLifecycle)),
                                       impl_.get(), nullptr);
  if (id < 0) {
    return lastError("Cannot subscribe to libvirt's domain events");
  }
  impl_->callbackId = id;
  return okStatus();
}

}  // namespace aula::agent
