// Routes of categories, groups, users and quotas.
#include "api/api_impl.hpp"

namespace aula::broker {

void Api::Impl::orgRoutes() {
  auto& b = broker;
  // Organisation.
  authed("GET", "/api/v1/categories",
         [&b](const Actor& a, ServerRequest&) { return ok(b.org.listCategories(a)); });
  authedBody("POST", "/api/v1/categories", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.org.createCategory(a, j), 201);
  });
  authedIdBody("PATCH", "/api/v1/categories/{id}",
               [&b](const Actor& a, std::int64_t id, const Json& j) {
                 return ok(b.org.updateCategory(a, id, j));
               });
  authedId("DELETE", "/api/v1/categories/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.org.deleteCategory(a, id));
           });

  authed("GET", "/api/v1/groups",
         [&b](const Actor& a, ServerRequest&) { return ok(b.org.listGroups(a)); });
  authedBody("POST", "/api/v1/groups", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.org.createGroup(a, j), 201);
  });
  authedId("GET", "/api/v1/groups/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return ok(b.org.getGroup(a, id));
  });
  authedIdBody("PATCH", "/api/v1/groups/{id}",
               [&b](const Actor& a, std::int64_t id, const Json& j) {
                 return ok(b.org.updateGroup(a, id, j));
               });
  authedId("DELETE", "/api/v1/groups/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return done(b.org.deleteGroup(a, id));
  });
  authedIdBody("POST", "/api/v1/groups/{id}/members",
               [&b](const Actor& a, std::int64_t id, const Json& j) {
                 return ok(b.org.addMembers(a, id, j));
               });
  authed("DELETE", "/api/v1/groups/{id}/members/{user}",
         [&b](const Actor& a, ServerRequest& request) -> ServerResponse {
           auto id = pathId(request);
           if (!id)
             return errorResponse(id.error());
           auto user = pathId(request, "user");
           if (!user)
             return errorResponse(user.error());
           return done(b.org.removeMember(a, *id, *user));
         });

  authed("GET", "/api/v1/users",
         [&b](const Actor& a, ServerRequest& r) { return ok(b.org.listUsers(a, r.query)); });
  authedBody("POST", "/api/v1/users", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.org.createUser(a, j), 201);
  });
  authedId("GET", "/api/v1/users/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return ok(b.org.getUser(a, id));
  });
  authedIdBody("PATCH", "/api/v1/users/{id}", [&b](const Actor& a, std::int64_t id, const Json& j) {
    return ok(b.org.updateUser(a, id, j));
  });
  authedId("DELETE", "/api/v1/users/{id}", [&b](const Actor& a, std::int64_t id, ServerRequest&) {
    return done(b.org.deleteUser(a, id));
  });
  authedId(
      "GET", "/api/v1/users/{id}/usage",
      [&b](const Actor& a, std::int64_t id, ServerRequest&) { return ok(b.org.usage(a, id)); });

  authed("GET", "/api/v1/quotas",
         [&b](const Actor& a, ServerRequest&) { return ok(b.org.listQuotas(a)); });
  authedBody("PUT", "/api/v1/quotas/{subject}",
             [&b](const Actor& a, ServerRequest& r, const Json& j) {
               return ok(b.org.setQuota(a, r.pathParams.at("subject"), j));
             });
  authed("DELETE", "/api/v1/quotas/{subject}", [&b](const Actor& a, ServerRequest& r) {
    return done(b.org.deleteQuota(a, r.pathParams.at("subject")));
  });
}

}  // namespace aula::broker
