// Routes of templates.
#include "api/api_impl.hpp"

namespace aula::broker {

void Api::Impl::templateRoutes() {
  auto& b = broker;
  // Templates.
  authed("GET", "/api/v1/templates",
         [&b](const Actor& a, ServerRequest&) { return ok(b.templates.list(a)); });
  authedBody("POST", "/api/v1/templates", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.templates.create(a, j), 201);
  });
  authedId("GET", "/api/v1/templates/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return ok(b.templates.get(a, id));
  });
  authedIdBody("PATCH", "/api/v1/templates/{id}",
               [&b](const Actor& a, std::int64_t id, const Json& j) {
                 return ok(b.templates.update(a, id, j));
               });
  authedId("DELETE", "/api/v1/templates/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.templates.remove(a, id));
           });
}

}  // namespace aula::broker
