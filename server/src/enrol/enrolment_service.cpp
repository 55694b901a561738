// Enrolment of hosts with one-time join tokens, and finding the host behind
// an agent's client certificate.
//
// The broker generates each host's keys itself and sends them back over the
// enrolment response. A CSR flow would keep the private keys on the host and
// is the better design once agents can make keys; until then the exposure is
// bounded: the join token works once and for a limited time, and the agent
// talks to the broker over TLS pinned to the CA's fingerprint, so only the
// holder of the token receives the keys, and nobody can read them on the way.
#include "aula/broker/enrolment_service.hpp"

#include <ctime>
#include <string>

#include "aula/common/crypto.hpp"
#include "aula/common/host_port.hpp"
#include "aula/common/log.hpp"

#include "core/policy.hpp"

namespace aula::broker {

using namespace detail;

namespace {

struct AgentAddress {
  std::string host;  // IP address or DNS name; empty when the agent gave none
  std::int64_t port = 0;
  bool isIp = false;
};

// "host:port", "[v6 address]:port", or a host without a port; none at all
// when the agent gave none.
Result<AgentAddress> parseAgentAddress(std::string_view text) {
  AgentAddress out;
  if (text.empty())
    return out;
  auto parsed = AULA_TRY(parseHostPort(text, PortRule::kOptional, "The agent address"));
  if (parsed.port && *parsed.port == 0) {
    return makeError(Errc::kInvalidArgument,
                     "The agent address '{}' has port 0; give the port the agent listens on, "
                     "such as '10.0.0.5:9443'.",
                     text.substr(0, 80));
  }
  out.host = parsed.host;
  out.port = parsed.port.value_or(0);
  out.isIp = isIpAddress(out.host);
  return out;
}

std::string utcTime(std::int64_t unix) {
  std::time_t t = static_cast<std::time_t>(unix);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buffer[32];
  (void)std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buffer;
}

}  // namespace

EnrolmentService::EnrolmentService(BrokerContext& ctx)
    : ctx_(ctx),
      throttle_(ctx.clock,
                ThrottleSettings{.maxFailuresPerUser = ctx.settings.maxEnrolFailuresPerAddress,
                                 .maxFailuresPerAddress = ctx.settings.maxEnrolFailuresPerAddress,
                                 .window = ctx.settings.throttle.window,
                                 .firstLockout = ctx.settings.throttle.firstLockout,
                                 .maxLockout = ctx.settings.throttle.maxLockout}) {}

Result<Json> EnrolmentService::listTokens(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    // Columns of the query below, in its order.
    enum TokenCol : std::size_t {
      kTokenId,
      kTokenHostName,
      kTokenKind,
      kTokenPoolId,
      kTokenCreated,
      kTokenExpires,
      kTokenUsed
    };
    auto rows =
        AULA_TRY(tx.query("SELECT id, host_name, kind, pool_id, created_at, expires_at, used_at "
                          "FROM enrolment_tokens ORDER BY id"));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"id", r.integer(kTokenId)},
                     {"host_name", r.text(kTokenHostName)},
                     {"kind", r.text(kTokenKind)},
                     {"pool_id", r.integer(kTokenPoolId)},
                     {"created_at", r.integer(kTokenCreated)},
                     {"expires_at", r.integer(kTokenExpires)},
                     {"used_at", nullableInt(r, kTokenUsed)}});
    }
    return out;
  });
}

Result<Json> EnrolmentService::createToken(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"host_name", "kind", "pool_id", "valid_minutes"}));
  auto hostName = AULA_TRY(json::getString(body, "host_name"));
  AULA_TRY_STATUS(checkHostName(hostName));
  auto kind = AULA_TRY(optString(body, "kind")).value_or("hypervisor");
  if (kind != "hypervisor" && kind != "workstation") {
    return Error(Errc::kInvalidArgument, "The field 'kind' must be 'hypervisor' or 'workstation'.");
  }
  auto poolId = AULA_TRY(json::getInt(body, "pool_id"));
  auto minutes = AULA_TRY(optInt(body, "valid_minutes")).value_or(60);
  if (minutes < 1 || minutes > 7 * 24 * 60) {
    return Error(Errc::kInvalidArgument,
                 "The field 'valid_minutes' must be between 1 and 10080 (a week).");
  }
  auto token = fmt::format("aula_j_{}", AULA_TRY(crypto::randomToken(24)));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    AULA_TRY(tx.queryOne("SELECT id FROM pools WHERE id = ?", {poolId},
                         fmt::format("There is no pool with id {}.", poolId)));
    auto rows = AULA_TRY(tx.query(
        "INSERT INTO enrolment_tokens (token_hash, host_name, kind, pool_id, created_by, "
        "created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        {crypto::sha256Hex(token), hostName, kind, poolId, actor.userId, now, now + minutes * 60}));
    auto id = rows[0].integer(0);
    AULA_TRY_STATUS(
        audit(tx, actor, now, "enrolment_token.create", fmt::format("host:{}", hostName)));
    return Json{{"id", id},     {"token", token},    {"host_name", hostName},
                {"kind", kind}, {"pool_id", poolId}, {"expires_at", now + minutes * 60}};
  });
}

Status EnrolmentService::deleteToken(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto n = AULA_TRY(tx.exec("DELETE FROM enrolment_tokens WHERE id = ?", {id}));
    if (n == 0)
      return makeError(Errc::kNotFound, "There is no enrolment token with id {}.", id);
    return audit(tx, actor, now, "enrolment_token.delete", fmt::format("token:{}", id));
  });
}

Result<Json> EnrolmentService::enroll(std::string_view token, const EnrollRequest& request) {
  const std::string& from = request.remoteAddress;
  if (auto block = throttle_.check(from, from)) {
    return makeError(Errc::kRateLimited,
                     "Too many failed enrolments from this address; try again in {} s.",
                     block->retryAfter.count());
  }
  if (ctx_.settings.ca.certPem.empty() || ctx_.settings.ca.keyPem.empty()) {
    return Error(Errc::kUnavailable,
                 "This broker has no CA key (tls.ca_key), so it cannot enrol hosts; the admin "
                 "must give it one.");
  }
  auto address = AULA_TRY(parseAgentAddress(request.agentAddress));
  auto now = unixNow(ctx_.clock);
  bool tokenRefused = false;
  auto result = ctx_.db.transactValue<
      Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    tokenRefused = false;
    // Columns of the query below, in its order.
    enum JoinCol : std::size_t {
      kJoinId,
      kJoinHostName,
      kJoinKind,
      kJoinPoolId,
      kJoinExpires,
      kJoinUsed
    };
    auto rows = AULA_TRY(
        tx.query("SELECT id, host_name, kind, pool_id, expires_at, used_at FROM enrolment_tokens "
                 "WHERE token_hash = ?",
                 {crypto::sha256Hex(token)}));
    if (rows.empty()) {
      tokenRefused = true;
      return Error(Errc::kUnauthenticated,
                   "The join token is not known; ask an admin for a new one (aulactl "
                   "enrolment-tokens create).");
    }
    const auto& t = rows[0];
    if (!t.isNull(kJoinUsed)) {
      tokenRefused = true;
      return makeError(Errc::kUnauthenticated,
                       "The join token was already used at {}; ask an admin for a new one.",
                       utcTime(t.integer(kJoinUsed)));
    }
    if (t.integer(kJoinExpires) <= now) {
      tokenRefused = true;
      return makeError(Errc::kUnauthenticated,
                       "The join token expired at {}; ask an admin for a new one.",
                       utcTime(t.integer(kJoinExpires)));
    }
    const auto tokenId = t.integer(kJoinId);
    const std::string hostName = t.text(kJoinHostName);
    const std::string kind = t.text(kJoinKind);
    const auto poolId = t.integer(kJoinPoolId);

    auto existing =
        AULA_TRY(tx.query("SELECT id, cert_fingerprint FROM hosts WHERE name = ?", {hostName}));
    if (!existing.empty() && !existing[0].isNull(1)) {
      return makeError(Errc::kConflict,
                       "The host '{}' is enrolled already; an admin must delete it (aulactl hosts "
                       "delete) before it can enrol again.",
                       hostName);
    }

    crypto::Certificate ca{.certPem = ctx_.settings.ca.certPem, .keyPem = ctx_.settings.ca.keyPem};
    auto client = AULA_TRY(crypto::issueCertificate(
        ca, {.commonName = hostName, .usage = crypto::CertUsage::kClient}));
    std::vector<std::string> dns{hostName};
    std::vector<std::string> ips;
    if (!address.host.empty() && address.host != hostName)
      (address.isIp ? ips : dns).push_back(address.host);
    auto spice = AULA_TRY(crypto::issueCertificate(ca, {.commonName = hostName,
                                                        .dnsNames = dns,
                                                        .ipAddresses = ips,
                                                        .usage = crypto::CertUsage::kServer}));
    auto fingerprint = AULA_TRY(crypto::certificateFingerprint(client.certPem));
    auto subject = AULA_TRY(crypto::certificateSubject(spice.certPem));

    AULA_TRY(tx.exec("UPDATE enrolment_tokens SET used_at = ? WHERE id = ?", {now, tokenId}));
    std::int64_t hostId = 0;
    if (existing.empty()) {
      auto inserted = AULA_TRY(tx.query(
          "INSERT INTO hosts (name, kind, pool_id, address, agent_port, cert_fingerprint, "
          "spice_subject, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
          {hostName, kind, poolId, address.host, address.port, fingerprint, subject, now}));
      hostId = inserted[0].integer(0);
    } else {
      // An admin made the host row before it enrolled: the token's kind and
      // pool are the admin's latest word, the agent's address its own.
      hostId = existing[0].integer(0);
      AULA_TRY(tx.exec(
          "UPDATE hosts SET kind = ?, pool_id = ?, address = ?, agent_port = ?, cert_fingerprint "
          "= ?, spice_subject = ? WHERE id = ?",
          {kind, poolId, address.host, address.port, fingerprint, subject, hostId}));
    }
    Actor agent{.username = fmt::format("agent:{}", hostName), .address = from};
    AULA_TRY_STATUS(audit(tx, agent, now, "host.enrol", fmt::format("host:{}", hostName),
                          Json{{"token_id", tokenId},
                               {"address", request.agentAddress},
                               {"cert_fingerprint", fingerprint},
                               {"spice_subject", subject}}));
    return Json{{"host_id", hostId},
                {"host_name", hostName},
                {"client_cert", client.certPem},
                {"client_key", client.keyPem},
                {"spice_cert", spice.certPem},
                {"spice_key", spice.keyPem},
                {"spice_subject", subject},
                {"ca", ctx_.settings.ca.certPem}};
  });
  if (!result && tokenRefused) {
    throttle_.recordFailure(from, from);
  } else if (result) {
    log::info("Host '{}' enrolled from {}.", (*result)["host_name"].get<std::string>(), from);
  }
  return result;
}

Result<std::int64_t> EnrolmentService::hostByCertificate(std::string_view fingerprint) {
  auto canonical = crypto::normalizeFingerprint(fingerprint);
  if (!canonical)
    return Error(Errc::kPermissionDenied, "This certificate does not belong to an enrolled host.");
  return ctx_.db.transactValue<std::int64_t>(
      db::TxMode::kRead, [&](db::Transaction& tx) -> Result<std::int64_t> {
        auto rows =
            AULA_TRY(tx.query("SELECT id FROM hosts WHERE cert_fingerprint = ?", {*canonical}));
        if (rows.empty()) {
          return Error(Errc::kPermissionDenied,
                       "This certificate does not belong to an enrolled host.");
        }
        return rows[0].integer(0);
      });
}

}  // namespace aula::broker
