// Routes of pools and hosts, and load reports for simulated hosts.
#include "api/api_impl.hpp"

namespace aula::broker {

void Api::Impl::hostRoutes() {
  auto& b = broker;
  // Hosts.
  authed("GET", "/api/v1/pools",
         [&b](const Actor& a, ServerRequest&) { return ok(b.hosts.listPools(a)); });
  authedBody("POST", "/api/v1/pools", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.hosts.createPool(a, j), 201);
  });
  authedId("DELETE", "/api/v1/pools/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return done(b.hosts.deletePool(a, id));
  });
  authed("GET", "/api/v1/hosts",
         [&b](const Actor& a, ServerRequest&) { return ok(b.hosts.list(a)); });
  authedBody("POST", "/api/v1/hosts", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.hosts.create(a, j), 201);
  });
  authedId("GET", "/api/v1/hosts/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return ok(b.hosts.get(a, id));
  });
  authedId(
      "GET", "/api/v1/hosts/{id}/devices",
      [&b](const Actor& a, std::int64_t id, ServerRequest&) { return ok(b.hosts.devices(a, id)); });
  // Workstations: a host of kind workstation, its devices and its users.
  authed("GET", "/api/v1/workstations",
         [&b](const Actor& a, ServerRequest&) { return ok(b.workstations.list(a)); });
  authedId("GET", "/api/v1/hosts/{id}/workstation",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return ok(b.workstations.get(a, id));
           });
  authedIdBody("PUT", "/api/v1/hosts/{id}/workstation",
               [&b](const Actor& a, std::int64_t id, const Json& j) {
                 return ok(b.workstations.set(a, id, j));
               });
  authedId("DELETE", "/api/v1/hosts/{id}/workstation",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.workstations.remove(a, id));
           });
  authedIdBody("PATCH", "/api/v1/hosts/{id}", [&b](const Actor& a, std::int64_t id, const Json& j) {
    return ok(b.hosts.update(a, id, j));
  });
  authedId("DELETE", "/api/v1/hosts/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return done(b.hosts.remove(a, id));
  });
  // Load reports for simulated hosts (tests, benchmarks); real agents report
  // over their mutual-TLS link.
  authedIdBody(
      "POST", "/api/v1/hosts/{id}/heartbeat",
      [&b](const Actor& a, std::int64_t id, const Json& j) -> ServerResponse {
        if (a.role != Role::kAdmin)
          return errorResponse(Error(Errc::kPermissionDenied, "Only an admin may do this."));
        return done(b.hosts.recordHeartbeat(id, j));
      });
}

}  // namespace aula::broker
