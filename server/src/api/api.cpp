// The broker's HTTP API: the shared plumbing (body parsing, authentication,
// metrics, the event stream) and the table of routes, whose handlers live
// one file per area (api/<area>_routes.cpp). Each handler authenticates,
// parses, calls a service, and turns a Result into a response; nothing here
// decides rights.
#include "aula/broker/api.hpp"

#include "aula/common/crypto.hpp"
#include "aula/common/log.hpp"

#include "api/api_impl.hpp"

namespace aula::broker {

int httpStatus(Errc code) {
  return http::httpStatusFor(code);
}

namespace {

// Metrics labels come from a fixed set, so a client cannot grow them.
std::string_view methodLabel(const std::string& method) {
  for (std::string_view m : {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}) {
    if (method == m)
      return m;
  }
  return "other";
}

}  // namespace

void Api::Impl::routes() {
  auto& b = broker;
  router.add("GET", "/healthz", [this](ServerRequest&) {
    auto s = broker.context.db.ping();
    if (!s)
      return ServerResponse::json(
          503, Json{{"status", "unavailable"}, {"reason", s.error().message()}}.dump());
    return ServerResponse::json(200, R"({"status":"ok"})");
  });
  router.add("GET", "/metrics", [this](ServerRequest&) { return metrics(); });
  // What a lab PC's greeter shows before anyone logs in; public, like the
  // login screen itself.
  router.add("GET", "/api/v1/greeter", [this](ServerRequest&) {
    const GreeterSettings& greeter = broker.context.settings.greeter;
    const auto* logo = reinterpret_cast<const std::uint8_t*>(greeter.logoPng.data());
    Json body{{"school_name", greeter.schoolName},
              {"idle_logout_seconds", greeter.idleLogout.count()},
              {"logo_png", greeter.logoPng.empty()
                               ? Json(nullptr)
                               : Json(crypto::base64UrlEncode({logo, greeter.logoPng.size()}))}};
    return ServerResponse::json(200, body.dump());
  });

  sessionRoutes();
  orgRoutes();
  templateRoutes();
  desktopRoutes();
  hostRoutes();
  enrolmentRoutes();
  bootHostRoutes();
  bootRoutes();

  // The audit log and the live events.
  authed("GET", "/api/v1/audit",
         [&b](const Actor& a, ServerRequest& r) { return ok(b.access.listAudit(a, r.query)); });
  authed("GET", "/api/v1/events",
         [this](const Actor& a, ServerRequest& r) { return eventStream(a, r); });
}

ServerResponse Api::Impl::eventStream(const Actor& actor, ServerRequest& request) {
  std::uint64_t after = events.lastId();
  auto last = request.header("last-event-id");
  if (!last.empty())
    after = std::strtoull(last.c_str(), nullptr, 10);
  ServerResponse response{.status = 200};
  response.headers.emplace_back("Content-Type", "text/event-stream");
  response.stream = [this, actor, after](http::StreamWriter& writer) mutable {
    eventStreams++;
    if (!writer.write(": connected\n\n")) {
      eventStreams--;
      return;
    }
    // The stream lives as long as its session: it checks at every
    // keep-alive, and at once when the user's sessions change on any broker.
    auto sessionHolds = [&] {
      auto held = broker.auth.checkSession(actor);
      if (held || held.error().code() != Errc::kUnauthenticated)
        return true;  // the database being away is not the session's end
      writer.write(fmt::format("event: session.ended\ndata: {}\n\n",
                               Json{{"reason", held.error().message()}}.dump()));
      return false;
    };
    while (!writer.stopping()) {
      auto batch = events.waitAfter(after, options.eventKeepAlive);
      if (batch.empty() && events.closed())
        break;  // the broker is stopping
      bool alive = true;
      bool check = batch.empty();
      if (batch.empty()) {
        alive = writer.write(": keep-alive\n\n");
      }
      for (const auto& e : batch) {
        after = e.id;
        if (e.internal) {
          check = check || (e.type == "session.ended" && e.ownerId == actor.userId);
          continue;
        }
        if (!e.everyone && !broker.access.canSee(actor, e))
          continue;
        alive = writer.write(
            fmt::format("id: {}\nevent: {}\ndata: {}\n\n", e.id, e.type, e.data.dump()));
        if (!alive)
          break;
      }
      if (!alive || (check && !sessionHolds()))
        break;
    }
    eventStreams--;
  };
  return response;
}

ServerResponse Api::Impl::metrics() {
  std::string out;
  auto& c = broker.counters;
  out += "# HELP aula_logins_total Successful logins.\n# TYPE aula_logins_total counter\n";
  out += fmt::format("aula_logins_total {}\n", c.logins.load());
  out +=
      "# HELP aula_login_failures_total Failed logins.\n# TYPE aula_login_failures_total counter\n";
  out += fmt::format("aula_login_failures_total {}\n", c.loginFailures.load());
  out +=
      "# HELP aula_logins_throttled_total Logins refused by rate limiting.\n# TYPE "
      "aula_logins_throttled_total counter\n";
  out += fmt::format("aula_logins_throttled_total {}\n", c.loginsThrottled.load());
  out +=
      "# HELP aula_desktop_starts_total Desktop starts asked of agents.\n# TYPE "
      "aula_desktop_starts_total counter\n";
  out += fmt::format("aula_desktop_starts_total {}\n", c.desktopStarts.load());
  out +=
      "# HELP aula_desktop_start_failures_total Desktop starts that failed.\n# TYPE "
      "aula_desktop_start_failures_total counter\n";
  out += fmt::format("aula_desktop_start_failures_total {}\n", c.desktopStartFailures.load());
  out += "# HELP aula_event_streams Open event streams.\n# TYPE aula_event_streams gauge\n";
  out += fmt::format("aula_event_streams {}\n", eventStreams.load());
  {
    std::lock_guard lock(metricsMutex);
    out +=
        "# HELP aula_http_requests_total HTTP requests by method and status.\n# TYPE "
        "aula_http_requests_total counter\n";
    for (const auto& [key, count] : requests) {
      auto space = key.find(' ');
      out += fmt::format("aula_http_requests_total{{method=\"{}\",status=\"{}\"}} {}\n",
                         key.substr(0, space), key.substr(space + 1), count);
    }
  }
  auto g = broker.access.gauges();
  out += "# HELP aula_database_up Whether the database answers.\n# TYPE aula_database_up gauge\n";
  out += fmt::format("aula_database_up {}\n", g.ok() ? 1 : 0);
  if (g) {
    out += "# HELP aula_desktops Desktops by state.\n# TYPE aula_desktops gauge\n";
    for (const auto& [state, n] : (*g)["desktops"].items())
      out += fmt::format("aula_desktops{{state=\"{}\"}} {}\n", state, n.get<std::int64_t>());
    out += "# HELP aula_hosts Hosts by state.\n# TYPE aula_hosts gauge\n";
    for (const auto& [state, n] : (*g)["hosts"].items())
      out += fmt::format("aula_hosts{{state=\"{}\"}} {}\n", state, n.get<std::int64_t>());
    out += "# HELP aula_users Users.\n# TYPE aula_users gauge\n";
    out += fmt::format("aula_users {}\n", (*g)["users"].get<std::int64_t>());
  }
  return ServerResponse::text(200, out, "text/plain; version=0.0.4; charset=utf-8");
}

Api::Api(Broker& broker, EventBus& events, ApiOptions options)
    : impl_(std::make_unique<Impl>(broker, events, std::move(options))) {
  impl_->routes();
}

Api::~Api() = default;

ServerResponse Api::handle(ServerRequest& request) {
  auto response = impl_->router.dispatch(request);
  {
    std::lock_guard lock(impl_->metricsMutex);
    impl_->requests[fmt::format("{} {}", methodLabel(request.method), response.status)]++;
  }
  return response;
}

}  // namespace aula::broker
