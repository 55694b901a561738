// Routes of the broker's API. Each handler authenticates, parses, calls the
// Broker, and turns a Result into a response; nothing here decides rights.
#include "aula/broker/api.hpp"

#include <charconv>
#include <map>
#include <mutex>

#include "aula/broker/console_file.hpp"
#include "aula/common/log.hpp"

namespace aula::broker {

using http::ServerRequest;
using http::ServerResponse;

int httpStatus(Errc code) {
  return http::httpStatusFor(code);
}

namespace {

ServerResponse errorResponse(const Error& error) {
  int status = httpStatus(error.code());
  std::string message = error.message();
  if (status == 500) {
    // Internal details go to the log, not to the client.
    log::error("Request failed: {}", error.message());
    message = "The broker hit an internal error; the admin can find the details in its log.";
  }
  auto response = ServerResponse::error(status, errcName(error.code()), message);
  if (error.code() == Errc::kRateLimited) {
    // "try again in N s" carries N; Retry-After says it to machines.
    auto pos = message.find("try again in ");
    if (pos != std::string::npos) {
      response.headers.emplace_back("Retry-After",
                                    std::to_string(std::atoi(message.c_str() + pos + 13)));
    }
  }
  return response;
}

ServerResponse ok(Result<Json> result, int status = 200) {
  if (!result)
    return errorResponse(result.error());
  return ServerResponse::json(status, result->dump());
}

ServerResponse done(Status status) {
  if (!status)
    return errorResponse(status.error());
  return ServerResponse{.status = 204};
}

Result<std::int64_t> pathId(const ServerRequest& request, const std::string& name = "id") {
  const auto& text = request.pathParams.at(name);
  std::int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value <= 0) {
    return makeError(Errc::kInvalidArgument, "The id '{}' in the path is not a positive number.",
                     text.substr(0, 40));
  }
  return value;
}

bool wantsForce(const ServerRequest& r) {
  auto it = r.query.find("force");
  return it != r.query.end() && (it->second == "1" || it->second == "true" || it->second.empty());
}

// Metrics labels come from a fixed set, so a client cannot grow them.
std::string_view methodLabel(const std::string& method) {
  for (std::string_view m : {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}) {
    if (method == m)
      return m;
  }
  return "other";
}

// The console descriptor as remote-viewer's connection file.
std::string consoleFile(const Json& d) {
  return renderVirtViewerFile(
      {.host = d.value("host", ""),
       .tlsPort = d.value("tls_port", Json()).is_number_integer() ? d["tls_port"].get<int>() : 0,
       .plainPort = d.value("port", Json()).is_number_integer() ? d["port"].get<int>() : 0,
       .password = d.value("ticket", ""),
       .caPem = d.value("ca", ""),
       .hostSubject = d.value("host_subject", ""),
       .title = d.contains("desktop") ? d["desktop"].value("name", "") : ""});
}

}  // namespace

struct Api::Impl {
  Impl(Broker& b, EventBus& e, ApiOptions o) : broker(b), events(e), options(std::move(o)) {}

  Broker& broker;
  EventBus& events;
  ApiOptions options;
  http::Router router;
  std::mutex metricsMutex;
  std::map<std::string, std::uint64_t> requests;  // "method status" -> count
  std::atomic<std::uint64_t> eventStreams{0};

  Result<Json> body(const ServerRequest& request) {
    if (request.body.empty())
      return Json::object();
    auto type = request.header("content-type");
    if (type.rfind("application/json", 0) != 0) {
      return Error(Errc::kInvalidArgument,
                   "The body must be JSON, sent with 'Content-Type: application/json'.");
    }
    auto parsed = AULA_TRY(json::parse(
        request.body, {.maxBytes = options.maxBodyBytes, .maxDepth = options.maxJsonDepth}));
    if (!parsed.is_object())
      return Error(Errc::kInvalidArgument, "The body must be a JSON object.");
    return parsed;
  }

  Result<Actor> actor(const ServerRequest& request) {
    auto header = request.header("authorization");
    if (header.rfind("Bearer ", 0) != 0) {
      return Error(Errc::kUnauthenticated, "Log in first: send 'Authorization: Bearer <token>'.");
    }
    return broker.authenticate(header.substr(7), request.remoteAddress);
  }

  // Adds a route whose handler gets the authenticated actor.
  template <typename F>
  void authed(std::string method, std::string pattern, F f) {
    router.add(std::move(method), std::move(pattern),
               [this, f](ServerRequest& request) -> ServerResponse {
                 auto a = actor(request);
                 if (!a)
                   return errorResponse(a.error());
                 return f(*a, request);
               });
  }

  // A route with a JSON body.
  template <typename F>
  void authedBody(std::string method, std::string pattern, F f) {
    authed(std::move(method), std::move(pattern),
           [this, f](const Actor& a, ServerRequest& request) -> ServerResponse {
             auto b = body(request);
             if (!b)
               return errorResponse(b.error());
             return f(a, request, *b);
           });
  }

  // A route on /{id}.
  template <typename F>
  void authedId(std::string method, std::string pattern, F f) {
    authed(std::move(method), std::move(pattern),
           [f](const Actor& a, ServerRequest& request) -> ServerResponse {
             auto id = pathId(request);
             if (!id)
               return errorResponse(id.error());
             return f(a, *id, request);
           });
  }

  template <typename F>
  void authedIdBody(std::string method, std::string pattern, F f) {
    authedBody(std::move(method), std::move(pattern),
               [f](const Actor& a, ServerRequest& request, const Json& b) -> ServerResponse {
                 auto id = pathId(request);
                 if (!id)
                   return errorResponse(id.error());
                 return f(a, *id, b);
               });
  }

  void routes();
  ServerResponse eventStream(const Actor& actor, ServerRequest& request);
  ServerResponse metrics();
};

void Api::Impl::routes() {
  auto& b = broker;
  router.add("GET", "/healthz", [this](ServerRequest&) {
    auto s = broker.database().ping();
    if (!s)
      return ServerResponse::json(
          503, Json{{"status", "unavailable"}, {"reason", s.error().message()}}.dump());
    return ServerResponse::json(200, R"({"status":"ok"})");
  });
  router.add("GET", "/metrics", [this](ServerRequest&) { return metrics(); });

  // Sessions.
  router.add("POST", "/api/v1/session", [this](ServerRequest& request) -> ServerResponse {
    auto parsed = body(request);
    if (!parsed)
      return errorResponse(parsed.error());
    if (auto s = json::checkFields(*parsed, {"username", "password"}); !s)
      return errorResponse(s.error());
    auto user = json::getString(*parsed, "username");
    if (!user)
      return errorResponse(user.error());
    auto password = json::getString(*parsed, "password");
    if (!password)
      return errorResponse(password.error());
    return ok(broker.login(*user, *password, request.remoteAddress), 201);
  });
  authed("DELETE", "/api/v1/session",
         [&b](const Actor& a, ServerRequest&) { return done(b.logout(a)); });
  authed("GET", "/api/v1/me", [&b](const Actor& a, ServerRequest&) { return ok(b.me(a)); });
  authedBody("POST", "/api/v1/me/password", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.changePassword(a, j));
  });
  authed("GET", "/api/v1/me/usage",
         [&b](const Actor& a, ServerRequest&) { return ok(b.usage(a, a.userId)); });
  authed("GET", "/api/v1/api-tokens",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listApiTokens(a)); });
  authedBody("POST", "/api/v1/api-tokens", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createApiToken(a, j), 201);
  });
  authedId("DELETE", "/api/v1/api-tokens/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.deleteApiToken(a, id));
           });

  // Organisation.
  authed("GET", "/api/v1/categories",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listCategories(a)); });
  authedBody("POST", "/api/v1/categories", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createCategory(a, j), 201);
  });
  authedIdBody("PATCH", "/api/v1/categories/{id}",
               [&b](const Actor& a, std::int64_t id, const Json& j) {
                 return ok(b.updateCategory(a, id, j));
               });
  authedId("DELETE", "/api/v1/categories/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.deleteCategory(a, id));
           });

  authed("GET", "/api/v1/groups",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listGroups(a)); });
  authedBody("POST", "/api/v1/groups", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createGroup(a, j), 201);
  });
  authedId("GET", "/api/v1/groups/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) { return ok(b.getGroup(a, id)); });
  authedIdBody(
      "PATCH", "/api/v1/groups/{id}",
      [&b](const Actor& a, std::int64_t id, const Json& j) { return ok(b.updateGroup(a, id, j)); });
  authedId("DELETE", "/api/v1/groups/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return done(b.deleteGroup(a, id));
  });
  authedIdBody(
      "POST", "/api/v1/groups/{id}/members",
      [&b](const Actor& a, std::int64_t id, const Json& j) { return ok(b.addMembers(a, id, j)); });
  authed("DELETE", "/api/v1/groups/{id}/members/{user}",
         [&b](const Actor& a, ServerRequest& request) -> ServerResponse {
           auto id = pathId(request);
           if (!id)
             return errorResponse(id.error());
           auto user = pathId(request, "user");
           if (!user)
             return errorResponse(user.error());
           return done(b.removeMember(a, *id, *user));
         });

  authed("GET", "/api/v1/users",
         [&b](const Actor& a, ServerRequest& r) { return ok(b.listUsers(a, r.query)); });
  authedBody("POST", "/api/v1/users", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createUser(a, j), 201);
  });
  authedId("GET", "/api/v1/users/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) { return ok(b.getUser(a, id)); });
  authedIdBody("PATCH", "/api/v1/users/{id}", [&b](const Actor& a, std::int64_t id, const Json& j) {
    return ok(b.updateUser(a, id, j));
  });
  authedId("DELETE", "/api/v1/users/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return done(b.deleteUser(a, id));
  });
  authedId("GET", "/api/v1/users/{id}/usage",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) { return ok(b.usage(a, id)); });

  authed("GET", "/api/v1/quotas",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listQuotas(a)); });
  authedBody("PUT", "/api/v1/quotas/{subject}",
             [&b](const Actor& a, ServerRequest& r, const Json& j) {
               return ok(b.setQuota(a, r.pathParams.at("subject"), j));
             });
  authed("DELETE", "/api/v1/quotas/{subject}", [&b](const Actor& a, ServerRequest& r) {
    return done(b.deleteQuota(a, r.pathParams.at("subject")));
  });

  // Templates.
  authed("GET", "/api/v1/templates",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listTemplates(a)); });
  authedBody("POST", "/api/v1/templates", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createTemplate(a, j), 201);
  });
  authedId("GET", "/api/v1/templates/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return ok(b.getTemplate(a, id));
  });
  authedIdBody("PATCH", "/api/v1/templates/{id}",
               [&b](const Actor& a, std::int64_t id, const Json& j) {
                 return ok(b.updateTemplate(a, id, j));
               });
  authedId("DELETE", "/api/v1/templates/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.deleteTemplate(a, id));
           });

  // Desktops.
  authed("GET", "/api/v1/desktops",
         [&b](const Actor& a, ServerRequest& r) { return ok(b.listDesktops(a, r.query)); });
  authedBody("POST", "/api/v1/desktops", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createDesktop(a, j), 201);
  });
  authedId("GET", "/api/v1/desktops/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return ok(b.getDesktop(a, id));
  });
  authedId("DELETE", "/api/v1/desktops/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.deleteDesktop(a, id));
           });
  authedId(
      "POST", "/api/v1/desktops/{id}/start",
      [&b](const Actor& a, std::int64_t id, ServerRequest&) { return ok(b.startDesktop(a, id)); });
  authedId("POST", "/api/v1/desktops/{id}/stop",
           [&b](const Actor& a, std::int64_t id, ServerRequest& r) {
             return ok(b.stopDesktop(a, id, wantsForce(r)));
           });
  authedId("POST", "/api/v1/desktops/{id}/console",
           [this](const Actor& a, std::int64_t id, ServerRequest& r) -> ServerResponse {
             auto descriptor = broker.console(a, id);
             if (!descriptor)
               return errorResponse(descriptor.error());
             Json& d = *descriptor;
             d["ca"] = options.caPem;
             // Either form carries a live ticket: no cache may keep it.
             if (r.header("accept").find("application/x-virt-viewer") != std::string::npos) {
               auto response =
                   ServerResponse::text(200, consoleFile(d), "application/x-virt-viewer");
               response.headers.emplace_back("Content-Disposition",
                                             "attachment; filename=\"desktop.vv\"");
               response.headers.emplace_back("Cache-Control", "no-store");
               return response;
             }
             auto response = ServerResponse::json(200, d.dump());
             response.headers.emplace_back("Cache-Control", "no-store");
             return response;
           });

  authedIdBody("POST", "/api/v1/desktops/{id}/template",
               [&b](const Actor& a, std::int64_t id, const Json& j) {
                 return ok(b.makeTemplateFromDesktop(a, id, j), 201);
               });

  // Deployments.
  authed("GET", "/api/v1/deployments",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listDeployments(a)); });
  authedBody("POST", "/api/v1/deployments", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createDeployment(a, j), 201);
  });
  authedId(
      "GET", "/api/v1/deployments/{id}",
      [&b](const Actor& a, std::int64_t id, ServerRequest&) { return ok(b.getDeployment(a, id)); });
  authedId("POST", "/api/v1/deployments/{id}/start",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return ok(b.startDeployment(a, id));
           });
  authedId("POST", "/api/v1/deployments/{id}/stop",
           [&b](const Actor& a, std::int64_t id, ServerRequest& r) {
             return ok(b.stopDeployment(a, id, wantsForce(r)));
           });
  authedId("DELETE", "/api/v1/deployments/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.deleteDeployment(a, id));
           });

  // Hosts.
  authed("GET", "/api/v1/pools",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listPools(a)); });
  authedBody("POST", "/api/v1/pools", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createPool(a, j), 201);
  });
  authedId("DELETE", "/api/v1/pools/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return done(b.deletePool(a, id));
  });
  authed("GET", "/api/v1/hosts",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listHosts(a)); });
  authedBody("POST", "/api/v1/hosts", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.createHost(a, j), 201);
  });
  authedId("GET", "/api/v1/hosts/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) { return ok(b.getHost(a, id)); });
  authedIdBody("PATCH", "/api/v1/hosts/{id}", [&b](const Actor& a, std::int64_t id, const Json& j) {
    return ok(b.updateHost(a, id, j));
  });
  authedId("DELETE", "/api/v1/hosts/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return done(b.deleteHost(a, id));
  });
  // Load reports for simulated hosts (tests, benchmarks); real agents report
  // over their mutual-TLS link.
  authedIdBody(
      "POST", "/api/v1/hosts/{id}/heartbeat",
      [&b](const Actor& a, std::int64_t id, const Json& j) -> ServerResponse {
        if (a.role != Role::kAdmin)
          return errorResponse(Error(Errc::kPermissionDenied, "Only an admin may do this."));
        return done(b.recordHeartbeat(id, j));
      });
  // Agents: enrolment with a join token (no session), then heartbeats
  // authenticated by the client certificate enrolment issued.
  router.add("POST", "/api/v1/agent/enroll", [this](ServerRequest& request) -> ServerResponse {
    auto parsed = body(request);
    if (!parsed)
      return errorResponse(parsed.error());
    if (auto s = json::checkFields(*parsed, {"token", "address"}); !s)
      return errorResponse(s.error());
    auto token = json::getString(*parsed, "token");
    if (!token)
      return errorResponse(token.error());
    std::string address;
    if (auto it = parsed->find("address"); it != parsed->end() && !it->is_null()) {
      if (!it->is_string())
        return errorResponse(
            Error(Errc::kInvalidArgument, "The field 'address' must be a string."));
      address = it->get<std::string>();
    }
    auto response = ok(broker.enrollHost(*token, {.agentAddress = address,
                                                  .remoteAddress = request.remoteAddress}),
                       201);
    response.headers.emplace_back("Cache-Control", "no-store");  // it carries private keys
    return response;
  });
  // Agents: known by the fingerprint of the client certificate they got at
  // enrolment, never by its name.
  auto fromAgent = [this](auto handle) {
    return [this, handle](ServerRequest& request) -> ServerResponse {
      if (!request.clientCertFingerprint) {
        return errorResponse(Error(Errc::kUnauthenticated,
                                   "An agent must present the client certificate it got at "
                                   "enrolment, signed by this broker's CA."));
      }
      auto host = broker.hostByCertificate(*request.clientCertFingerprint);
      if (!host)
        return errorResponse(host.error());
      auto json = body(request);
      if (!json)
        return errorResponse(json.error());
      return done(handle(*host, *json));
    };
  };
  router.add("POST", "/api/v1/agent/heartbeat",
             fromAgent([this](std::int64_t host, const Json& load) {
               return broker.recordHeartbeat(host, load);
             }));
  router.add("POST", "/api/v1/agent/events",
             fromAgent([this](std::int64_t host, const Json& batch) {
               return broker.recordAgentEvents(host, batch);
             }));
  authed("GET", "/api/v1/enrolment-tokens",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listEnrolmentTokens(a)); });
  authedBody("POST", "/api/v1/enrolment-tokens",
             [&b](const Actor& a, ServerRequest&, const Json& j) {
               return ok(b.createEnrolmentToken(a, j), 201);
             });
  authedId("DELETE", "/api/v1/enrolment-tokens/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.deleteEnrolmentToken(a, id));
           });

  authed("GET", "/api/v1/boot-hosts",
         [&b](const Actor& a, ServerRequest&) { return ok(b.listBootHosts(a)); });
  authedBody("PUT", "/api/v1/boot-hosts/{mac}",
             [&b](const Actor& a, ServerRequest& r, const Json& j) {
               return ok(b.putBootHost(a, r.pathParams.at("mac"), j));
             });
  authed("DELETE", "/api/v1/boot-hosts/{mac}", [&b](const Actor& a, ServerRequest& r) {
    return done(b.deleteBootHost(a, r.pathParams.at("mac")));
  });

  authed("GET", "/api/v1/audit",
         [&b](const Actor& a, ServerRequest& r) { return ok(b.listAudit(a, r.query)); });
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
    while (!writer.stopping()) {
      auto batch = events.waitAfter(after, options.eventKeepAlive);
      if (batch.empty() && events.closed())
        break;  // the broker is stopping
      bool alive = true;
      if (batch.empty()) {
        alive = writer.write(": keep-alive\n\n");
      }
      for (const auto& e : batch) {
        after = e.id;
        if (!broker.canSee(actor, e))
          continue;
        alive = writer.write(
            fmt::format("id: {}\nevent: {}\ndata: {}\n\n", e.id, e.type, e.data.dump()));
        if (!alive)
          break;
      }
      if (!alive)
        break;
    }
    eventStreams--;
  };
  return response;
}

ServerResponse Api::Impl::metrics() {
  std::string out;
  auto& c = broker.counters();
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
  auto g = broker.gauges();
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
