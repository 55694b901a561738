// Routes of desktops (with their console file) and deployments.
#include "aula/broker/console_file.hpp"

#include "api/api_impl.hpp"

namespace aula::broker {

namespace {

// The console descriptor as remote-viewer's connection file.
std::string consoleFile(const Json& d) {
  return renderVirtViewerFile(
      {.host = d.value("host", ""),
       .tlsPort = d.value("tls_port", Json()).is_number_integer() ? d["tls_port"].get<int>() : 0,
       .plainPort = d.value("port", Json()).is_number_integer() ? d["port"].get<int>() : 0,
       .password = d.value("ticket", ""),
       .caPem = d.value("ca", ""),
       .hostSubject = d.value("host_subject", ""),
       .title = d.contains("desktop") ? d["desktop"].value("name", "") : "",
       .usb = d.value("usb", "")});
}

}  // namespace

void Api::Impl::desktopRoutes() {
  auto& b = broker;
  // Desktops.
  authedRead("GET", "/api/v1/desktops",
             [&b](const Actor& a, db::Transaction& tx, ServerRequest& r) {
               return b.desktops.list(tx, a, r.query);
             });
  authedBody("POST", "/api/v1/desktops", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.desktops.create(a, j), 201);
  });
  authedId("GET", "/api/v1/desktops/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return ok(b.desktops.get(a, id));
  });
  authedId("DELETE", "/api/v1/desktops/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.desktops.remove(a, id));
           });
  authedId("POST", "/api/v1/desktops/{id}/start",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return ok(b.desktops.start(a, id));
           });
  authedId("POST", "/api/v1/desktops/{id}/stop",
           [&b](const Actor& a, std::int64_t id, ServerRequest& r) {
             return ok(b.desktops.stop(a, id, wantsForce(r)));
           });
  authedId("POST", "/api/v1/desktops/{id}/console",
           [this](const Actor& a, std::int64_t id, ServerRequest& r) -> ServerResponse {
             auto descriptor = broker.desktops.console(a, id);
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
                 return ok(b.desktops.makeTemplate(a, id, j), 201);
               });

  // Deployments.
  authed("GET", "/api/v1/deployments",
         [&b](const Actor& a, ServerRequest&) { return ok(b.deployments.list(a)); });
  authedBody("POST", "/api/v1/deployments", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.deployments.create(a, j), 201);
  });
  authedId("GET", "/api/v1/deployments/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return ok(b.deployments.get(a, id));
           });
  authedId("POST", "/api/v1/deployments/{id}/start",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return ok(b.deployments.start(a, id));
           });
  authedId("POST", "/api/v1/deployments/{id}/stop",
           [&b](const Actor& a, std::int64_t id, ServerRequest& r) {
             return ok(b.deployments.stop(a, id, wantsForce(r)));
           });
  authedId("DELETE", "/api/v1/deployments/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.deployments.remove(a, id));
           });
}

}  // namespace aula::broker
