// Enrolment of hosts: one-time join tokens, an agent's enrolment with one,
// and the host behind an agent's client certificate.
#pragma once

#include <cstdint>
#include <string_view>

#include "aula/broker/context.hpp"

namespace aula::broker {

class EnrolmentService {
 public:
  explicit EnrolmentService(BrokerContext& ctx);

  Result<Json> listTokens(const Actor& actor);
  Result<Json> createToken(const Actor& actor, const Json& body);
  Status deleteToken(const Actor& actor, std::int64_t id);

  // An agent's enrolment with a one-time join token (no user session):
  // creates the host (or fills in the one an admin made and nobody enrolled)
  // and issues its client and SPICE server certificates with the broker's CA.
  // {"host_id","host_name","client_cert","client_key","spice_cert",
  // "spice_key","spice_subject","ca"}. kUnauthenticated for an unknown, used
  // or expired token; kRateLimited after too many failures from one address.
  Result<Json> enroll(std::string_view token, const EnrollRequest& request);
  // The enrolled host whose client certificate has this fingerprint
  // ("AB:CD:..."), or kPermissionDenied.
  Result<std::int64_t> hostByCertificate(std::string_view fingerprint);

 private:
  BrokerContext& ctx_;
  LoginThrottle throttle_;  // failed enrolments per address
};

}  // namespace aula::broker
