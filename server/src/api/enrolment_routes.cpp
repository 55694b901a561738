// Routes of agents (enrolment, heartbeats, events) and enrolment tokens.
#include "aula/common/agent_protocol.hpp"

#include "api/api_impl.hpp"

namespace aula::broker {

void Api::Impl::enrolmentRoutes() {
  auto& b = broker;
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
    auto response = ok(broker.enrolment.enroll(*token, {.agentAddress = address,
                                                        .remoteAddress = request.remoteAddress}),
                       201);
    response.headers.emplace_back("Cache-Control", "no-store");  // it carries private keys
    return response;
  });
  // Agents: known by the fingerprint of the client certificate they got at
  // enrolment, never by its name.
  auto fromAgentAnswering = [this](auto handle) {
    return [this, handle](ServerRequest& request) -> ServerResponse {
      if (!request.clientCertFingerprint) {
        return errorResponse(Error(Errc::kUnauthenticated,
                                   "An agent must present the client certificate it got at "
                                   "enrolment, signed by this broker's CA."));
      }
      auto host = broker.enrolment.hostByCertificate(*request.clientCertFingerprint);
      if (!host)
        return errorResponse(host.error());
      auto json = body(request);
      if (!json)
        return errorResponse(json.error());
      return handle(*host, *json, request);
    };
  };
  auto fromAgent = [fromAgentAnswering](auto handle) {
    return fromAgentAnswering(
        [handle](std::int64_t host, const Json& json, ServerRequest&) -> ServerResponse {
          return done(handle(host, json));
        });
  };
  router.add("POST", "/api/v1/agent/heartbeat",
             fromAgent([this](std::int64_t host, const Json& load) {
               return broker.hosts.recordHeartbeat(host, load);
             }));
  router.add("POST", "/api/v1/agent/events",
             fromAgent([this](std::int64_t host, const Json& batch) {
               return broker.hosts.recordAgentEvents(host, batch);
             }));
  // A workstation's agent claims it for the user its greeter logged in,
  // and releases it when the VM has stopped.
  router.add("POST", std::string(proto::kWorkstationClaimRoute),
             fromAgentAnswering([this](std::int64_t host, const Json& j,
                                       ServerRequest& request) -> ServerResponse {
               auto response = ok(broker.workstations.claim(host, j, request.remoteAddress));
               response.headers.emplace_back("Cache-Control", "no-store");
               return response;
             }));
  router.add("POST", std::string(proto::kWorkstationReleaseRoute),
             fromAgent([this](std::int64_t host, const Json& j) {
               return broker.workstations.release(host, j);
             }));
  authed("GET", "/api/v1/enrolment-tokens",
         [&b](const Actor& a, ServerRequest&) { return ok(b.enrolment.listTokens(a)); });
  authedBody("POST", "/api/v1/enrolment-tokens",
             [&b](const Actor& a, ServerRequest&, const Json& j) {
               return ok(b.enrolment.createToken(a, j), 201);
             });
  authedId("DELETE", "/api/v1/enrolment-tokens/{id}",
           [&b](const Actor& a, std::int64_t id, ServerRequest&) {
             return done(b.enrolment.deleteToken(a, id));
           });
}

}  // namespace aula::broker
