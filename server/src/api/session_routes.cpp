// Routes of sessions, the current user and API tokens.
#include "api/api_impl.hpp"

namespace aula::broker {

void Api::Impl::sessionRoutes() {
  auto& b = broker;
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
    return ok(broker.auth.login(*user, *password, request.remoteAddress), 201);
  });
  authed("DELETE", "/api/v1/session",
         [&b](const Actor& a, ServerRequest&) { return done(b.auth.logout(a)); });
  authed("GET", "/api/v1/me", [&b](const Actor& a, ServerRequest&) { return ok(b.auth.me(a)); });
  // The school directory, for admins: what a user would get, and a sync now.
  authed("GET", "/api/v1/directory/check", [&b](const Actor& a, ServerRequest& r) {
    auto it = r.query.find("username");
    return ok(b.auth.checkDirectoryUser(a, it == r.query.end() ? "" : it->second));
  });
  authed("POST", "/api/v1/directory/sync",
         [&b](const Actor& a, ServerRequest&) { return ok(b.auth.syncDirectoryUsers(a)); });
  authedBody("POST", "/api/v1/me/password", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.auth.changePassword(a, j));
  });
  authed("GET", "/api/v1/me/usage",
         [&b](const Actor& a, ServerRequest&) { return ok(b.org.usage(a, a.userId)); });
  authed("GET", "/api/v1/api-tokens",
         [&b](const Actor& a, ServerRequest&) { return ok(b.auth.listTokens(a)); });
  authedBody("POST", "/api/v1/api-tokens", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.auth.createToken(a, j), 201);
  });
  authedId("DELETE", "/api/v1/api-tokens/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.auth.deleteToken(a, id));
           });
}

}  // namespace aula::broker
