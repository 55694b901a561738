// Routes of boot hosts.
#include "api/api_impl.hpp"

namespace aula::broker {

void Api::Impl::bootHostRoutes() {
  auto& b = broker;
  authed("GET", "/api/v1/boot-hosts",
         [&b](const Actor& a, ServerRequest&) { return ok(b.bootHosts.list(a)); });
  authedBody("PUT", "/api/v1/boot-hosts/{mac}",
             [&b](const Actor& a, ServerRequest& r, const Json& j) {
               return ok(b.bootHosts.put(a, r.pathParams.at("mac"), j));
             });
  authed("DELETE", "/api/v1/boot-hosts/{mac}", [&b](const Actor& a, ServerRequest& r) {
    return done(b.bootHosts.remove(a, r.pathParams.at("mac")));
  });
}

}  // namespace aula::broker
