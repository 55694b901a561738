// org.aula.Agent1 over sd-bus (see agent_bus.hpp).
#include "agent_bus.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "aula/common/log.hpp"

namespace aula::agent {
namespace {

constexpr const char* kInterface = "org.aula.Agent1";

struct BusUnref {
  void operator()(sd_bus* bus) const { sd_bus_flush_close_unref(bus); }
};
using BusPtr = std::unique_ptr<sd_bus, BusUnref>;

struct SlotUnref {
  void operator()(sd_bus_slot* slot) const { sd_bus_slot_unref(slot); }
};
using SlotPtr = std::unique_ptr<sd_bus_slot, SlotUnref>;

struct MessageUnref {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};
using MessagePtr = std::unique_ptr<sd_bus_message, MessageUnref>;

struct CredsUnref {
  void operator()(sd_bus_creds* c) const { sd_bus_creds_unref(c); }
};
using CredsPtr = std::unique_ptr<sd_bus_creds, CredsUnref>;

std::string_view errorNameOf(Errc code) {
  switch (code) {
    case Errc::kPermissionDenied:
    case Errc::kUnauthenticated:
      return "org.aula.Agent1.Error.NotAllowed";
    case Errc::kConflict:
      return "org.aula.Agent1.Error.Busy";
    case Errc::kConfig:
      return "org.aula.Agent1.Error.PreflightFailed";
    case Errc::kUnavailable:
    case Errc::kConnectionRefused:
    case Errc::kTimeout:
    case Errc::kTls:
      return "org.aula.Agent1.Error.BrokerUnavailable";
    case Errc::kInvalidArgument:
    case Errc::kParse:
      return SD_BUS_ERROR_INVALID_ARGS;
    default:
      return "org.aula.Agent1.Error.Failed";
  }
}

// Sets the reply's error from ours; returns what sd-bus handlers return.
int replyError(sd_bus_error* out, const Error& error) {
  return sd_bus_error_set(out, std::string(errorNameOf(error.code())).c_str(),
                          error.message().c_str());
}

}  // namespace

struct AgentBus::Impl {
  WorkstationService* service = nullptr;
  std::vector<uid_t> allowedUids;
  BusPtr bus;
  SlotPtr vtableSlot;
  int wakeFd = -1;
  std::atomic<bool> stopping{false};
  std::mutex queueMutex;
  std::deque<WorkstationStatus> signals;  // waiting to be emitted by the loop
  std::thread loop;

  ~Impl() {
    if (wakeFd >= 0)
      ::close(wakeFd);
  }

  void wake() const {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(wakeFd, &one, sizeof one);
  }

  // Root and the greeter's user, checked on every call whatever the bus
  // policy says.
  Status checkCaller(sd_bus_message* message) const {
    sd_bus_creds* raw = nullptr;
    int r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID, &raw);
    CredsPtr creds(raw);
    uid_t uid = 0;
    if (r < 0 || sd_bus_creds_get_euid(creds.get(), &uid) < 0) {
      return makeError(Errc::kPermissionDenied,
                       "The agent cannot tell who is calling, so it does not answer.");
    }
    if (uid == 0 || std::find(allowedUids.begin(), allowedUids.end(), uid) != allowedUids.end())
      return okStatus();
    return makeError(Errc::kPermissionDenied,
                     "Only the greeter and root may use the workstation agent, not uid {}.", uid);
  }

  void run();
  void emitPending();
};

namespace {

AgentBus::Impl& implOf(void* userdata) {
  return *static_cast<AgentBus::Impl*>(userdata);
}

// Every handler runs inside this: nothing throws through sd-bus, and the
// caller is checked first.
template <typename Body>
int guarded(sd_bus_message* message, void* userdata, sd_bus_error* error, const char* method,
            Body body) {
  try {
    AgentBus::Impl& impl = implOf(userdata);
    if (auto allowed = impl.checkCaller(message); !allowed) {
      log::warn("D-Bus {}: {}", method, allowed.error().message());
      return replyError(error, allowed.error());
    }
    return body(impl);
  } catch (const std::exception& e) {
    log::error("D-Bus {} failed unexpectedly: {}", method, e.what());
    return sd_bus_error_set(error, "org.aula.Agent1.Error.Failed",
                            "The agent failed unexpectedly; see its log.");
  }
}

int onDevices(sd_bus_message* message, void* userdata, sd_bus_error* error) {
  return guarded(message, userdata, error, "Devices", [&](AgentBus::Impl& impl) {
    auto facts = impl.service->devices();
    if (!facts)
      return replyError(error, facts.error());
    return sd_bus_reply_method_return(message, "s", inventoryJson(*facts).dump().c_str());
  });
}

int onPreflight(sd_bus_message* message, void* userdata, sd_bus_error* error) {
  return guarded(message, userdata, error, "Preflight", [&](AgentBus::Impl& impl) {
    char** raw = nullptr;
    int r = sd_bus_message_read_strv(message, &raw);
    if (r < 0)
      return r;
    std::vector<ChosenDevice> chosen;
    Status parsed = okStatus();
    for (char** at = raw; at != nullptr && *at != nullptr; ++at) {
      auto device = parseChosenDevice(*at);
      if (!device && parsed)
        parsed = device.error();
      else if (device)
        chosen.push_back(*device);
    }
    for (char** at = raw; at != nullptr && *at != nullptr; ++at)
      std::free(*at);  // NOLINT(cppcoreguidelines-no-malloc): sd-bus allocates with malloc
    std::free(raw);    // NOLINT(cppcoreguidelines-no-malloc)
    if (!parsed)
      return replyError(error, parsed.error());
    auto findings = impl.service->preflight(chosen);
    if (!findings)
      return replyError(error, findings.error());
    sd_bus_message* rawReply = nullptr;
    r = sd_bus_message_new_method_return(message, &rawReply);
    MessagePtr reply(rawReply);
    if (r < 0)
      return r;
    r = sd_bus_message_append(reply.get(), "b", anyFailed(*findings) ? 0 : 1);
    if (r >= 0)
      r = sd_bus_message_open_container(reply.get(), 'a', "(sss)");
    for (const auto& f : *findings) {
      if (r >= 0)
        r = sd_bus_message_append(reply.get(), "(sss)", std::string(verdictName(f.verdict)).c_str(),
                                  f.text.c_str(), f.fix.c_str());
    }
    if (r >= 0)
      r = sd_bus_message_close_container(reply.get());
    if (r < 0)
      return r;
    return sd_bus_send(nullptr, reply.get(), nullptr);
  });
}

int onStart(sd_bus_message* message, void* userdata, sd_bus_error* error) {
  return guarded(message, userdata, error, "Start", [&](AgentBus::Impl& impl) {
    const char* user = nullptr;
    const char* session = nullptr;
    int r = sd_bus_message_read(message, "ss", &user, &session);
    if (r < 0)
      return r;
    if (auto started = impl.service->start(user, session); !started)
      return replyError(error, started.error());
    return sd_bus_reply_method_return(message, "");
  });
}

int onStop(sd_bus_message* message, void* userdata, sd_bus_error* error) {
  return guarded(message, userdata, error, "Stop", [&](AgentBus::Impl& impl) {
    int force = 0;
    int r = sd_bus_message_read(message, "b", &force);
    if (r < 0)
      return r;
    if (auto stopped = impl.service->stop(force != 0); !stopped)
      return replyError(error, stopped.error());
    return sd_bus_reply_method_return(message, "");
  });
}

int onStatus(sd_bus_message* message, void* userdata, sd_bus_error* error) {
  return guarded(message, userdata, error, "Status", [&](AgentBus::Impl& impl) {
    auto now = impl.service->status();
    return sd_bus_reply_method_return(message, "sss", std::string(stateName(now.state)).c_str(),
                                      now.user.c_str(), now.message.c_str());
  });
}

// NOLINTBEGIN: sd-bus's vtable macros are C designated initialisers.
const sd_bus_vtable kVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS("Devices", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", inventory), onDevices,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Preflight", SD_BUS_ARGS("as", chosen),
                            SD_BUS_RESULT("b", passed, "a(sss)", findings), onPreflight,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Start", SD_BUS_ARGS("s", user, "s", session), SD_BUS_NO_RESULT,
                            onStart, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Stop", SD_BUS_ARGS("b", force), SD_BUS_NO_RESULT, onStop,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Status", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("s", state, "s", user, "s", message), onStatus,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL_WITH_ARGS("StateChanged", SD_BUS_ARGS("s", state, "s", user, "s", message), 0),
    SD_BUS_VTABLE_END};
// NOLINTEND

}  // namespace

void AgentBus::Impl::emitPending() {
  std::deque<WorkstationStatus> pending;
  {
    std::lock_guard lock(queueMutex);
    pending.swap(signals);
  }
  for (const auto& s : pending) {
    int r = sd_bus_emit_signal(bus.get(), kAgentObjectPath, kInterface, "StateChanged", "sss",
                               std::string(stateName(s.state)).c_str(), s.user.c_str(),
                               s.message.c_str());
    if (r < 0)
      log::warn("D-Bus: cannot send StateChanged: {}.", std::strerror(-r));
  }
}

void AgentBus::Impl::run() {
  while (!stopping.load()) {
    int r = 0;
    while ((r = sd_bus_process(bus.get(), nullptr)) > 0) {
    }
    if (r < 0) {
      log::error(
          "D-Bus: the connection to the bus failed ({}); the workstation's front door is "
          "closed until the agent restarts.",
          std::strerror(-r));
      return;
    }
    emitPending();
    sd_bus_flush(bus.get());
    std::uint64_t usec = UINT64_MAX;
    sd_bus_get_timeout(bus.get(), &usec);
    int timeoutMs = -1;
    if (usec != UINT64_MAX) {
      timespec now{};
      clock_gettime(CLOCK_MONOTONIC, &now);
      const std::uint64_t nowUs = static_cast<std::uint64_t>(now.tv_sec) * 1000000U +
                                  static_cast<std::uint64_t>(now.tv_nsec) / 1000U;
      timeoutMs =
          usec <= nowUs
              ? 0
              : static_cast<int>(std::min<std::uint64_t>((usec - nowUs + 999) / 1000, 60000));
    }
    std::array<pollfd, 2> fds{};
    fds[0] = {sd_bus_get_fd(bus.get()), static_cast<short>(sd_bus_get_events(bus.get())), 0};
    fds[1] = {wakeFd, POLLIN, 0};
    if (::poll(fds.data(), fds.size(), timeoutMs) < 0 && errno != EINTR) {
      log::error("D-Bus: poll failed: {}.", std::strerror(errno));
      return;
    }
    if ((fds[1].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      [[maybe_unused]] auto got = ::read(wakeFd, &count, sizeof count);
    }
  }
}

AgentBus::AgentBus(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<AgentBus>> AgentBus::start(WorkstationService& service,
                                                  const AgentBusOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->service = &service;
  impl->allowedUids = options.allowedUids;
  sd_bus* raw = nullptr;
  int r = 0;
  const std::string where = options.address.empty() ? "the system bus" : options.address;
  if (options.address.empty()) {
    r = sd_bus_open_system(&raw);
  } else {
    r = sd_bus_new(&raw);
    if (r >= 0)
      r = sd_bus_set_address(raw, options.address.c_str());
    if (r >= 0)
      r = sd_bus_set_bus_client(raw, 1);
    if (r >= 0)
      r = sd_bus_start(raw);
  }
  impl->bus.reset(raw);
  if (r < 0) {
    return makeError(Errc::kUnavailable, "Cannot connect to {}: {}. Is dbus-daemon running?", where,
                     std::strerror(-r));
  }
  sd_bus_slot* slot = nullptr;
  r = sd_bus_add_object_vtable(impl->bus.get(), &slot, kAgentObjectPath, kInterface, kVtable,
                               impl.get());
  impl->vtableSlot.reset(slot);
  if (r < 0)
    return makeError(Errc::kInternal, "Cannot serve {}: {}.", kAgentObjectPath, std::strerror(-r));
  r = sd_bus_request_name(impl->bus.get(), kAgentBusName, 0);
  if (r < 0) {
    return makeError(r == -EACCES ? Errc::kPermissionDenied : Errc::kUnavailable,
                     "Cannot take the name {} on {}: {}. Is the bus policy "
                     "/usr/share/dbus-1/system.d/org.aula.Agent1.conf installed, and no other "
                     "agent running?",
                     kAgentBusName, where, std::strerror(-r));
  }
  impl->wakeFd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl->wakeFd < 0)
    return makeError(Errc::kInternal, "eventfd failed: {}.", std::strerror(errno));
  Impl* self = impl.get();
  service.setListener([self](const WorkstationStatus& status) {
    {
      std::lock_guard lock(self->queueMutex);
      self->signals.push_back(status);
    }
    self->wake();
  });
  impl->loop = std::thread([self] { self->run(); });
  log::info("Serving {} on {}.", kAgentBusName, where);
  return std::unique_ptr<AgentBus>(new AgentBus(std::move(impl)));
}

AgentBus::~AgentBus() {
  impl_->service->setListener(nullptr);
  impl_->stopping = true;
  impl_->wake();
  if (impl_->loop.joinable())
    impl_->loop.join();
  sd_bus_release_name(impl_->bus.get(), kAgentBusName);
}

}  // namespace aula::agent
