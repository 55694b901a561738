// Sign-in and who is asking: the first admin, sessions (password or LDAP),
// the current user, password changes and API tokens.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "aula/broker/context.hpp"

namespace aula::broker {

class AuthService {
 public:
  explicit AuthService(BrokerContext& ctx);

  // Creates the first admin and the default quotas if there are no users yet
  // (aula-broker init).
  Status bootstrap(std::string_view adminName, std::string_view adminPassword);

  // {"token","expires_at","user"}; kUnauthenticated, kRateLimited ("try again in N s").
  Result<Json> login(std::string_view username, std::string_view password,
                     const std::string& address);
  Result<Actor> authenticate(std::string_view token, const std::string& address);
  // authenticate() in two steps, for a request that reads everything in one
  // transaction: the session behind a token, read in `tx`; then, after that
  // transaction, touch() moves its idle clock when a minute has passed.
  struct Session {
    Actor actor;
    bool touch = false;
  };
  Result<Session> findSession(db::Transaction& tx, std::string_view token,
                              const std::string& address);
  Status touch(const Session& session);
  // Whether the actor's session (or API token) still holds: not ended,
  // expired or idle too long, and its user not disabled. kUnauthenticated
  // says which. For what stays open past its request (the event stream).
  Status checkSession(const Actor& actor);
  Status logout(const Actor& actor);
  Result<Json> me(const Actor& actor);
  Result<Json> changePassword(const Actor& actor, const Json& body);

  Result<Json> listTokens(const Actor& actor);
  Result<Json> createToken(const Actor& actor, const Json& body);
  Status deleteToken(const Actor& actor, std::int64_t id);

  // What the broker would do for this directory user, without logging them
  // in or changing anything (admins): the entry found, every group with the
  // path to it through nested groups, and the role and Aula groups that
  // follow.
  Result<Json> checkDirectoryUser(const Actor& actor, std::string_view username);
  // Brings every enabled directory user the broker knows in step with the
  // directory, as a login would: role, category and mapped groups. A user
  // the directory no longer has is disabled (never deleted; desktops stay).
  // A directory that is away stops the round and disables nobody.
  // {"checked", "kept", "disabled": [names]}.
  Result<Json> syncDirectoryUsers(const Actor& actor);

 private:
  Result<std::int64_t> syncDirectoryUser(const DirectoryUser& entry);

  BrokerContext& ctx_;
  LoginThrottle throttle_;
};

}  // namespace aula::broker
