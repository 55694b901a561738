// The school's organisation: categories, groups and their members, users,
// quotas and what a user has in use.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "aula/broker/context.hpp"

namespace aula::broker {

class OrgService {
 public:
  explicit OrgService(BrokerContext& ctx) : ctx_(ctx) {}

  Result<Json> listCategories(const Actor& actor);
  Result<Json> createCategory(const Actor& actor, const Json& body);
  Result<Json> updateCategory(const Actor& actor, std::int64_t id, const Json& body);
  Status deleteCategory(const Actor& actor, std::int64_t id);

  Result<Json> listGroups(const Actor& actor);
  Result<Json> getGroup(const Actor& actor, std::int64_t id);
  Result<Json> createGroup(const Actor& actor, const Json& body);
  Result<Json> updateGroup(const Actor& actor, std::int64_t id, const Json& body);
  Status deleteGroup(const Actor& actor, std::int64_t id);
  Result<Json> addMembers(const Actor& actor, std::int64_t groupId, const Json& body);
  Status removeMember(const Actor& actor, std::int64_t groupId, std::int64_t userId);

  Result<Json> listUsers(const Actor& actor, const std::map<std::string, std::string>& filter);
  Result<Json> getUser(const Actor& actor, std::int64_t id);
  Result<Json> createUser(const Actor& actor, const Json& body);
  Result<Json> updateUser(const Actor& actor, std::int64_t id, const Json& body);
  Status deleteUser(const Actor& actor, std::int64_t id);

  // Quotas by subject: "role:user", "group-member:<id>", "user:<id>",
  // "group:<id>", "category:<id>".
  Result<Json> listQuotas(const Actor& actor);
  Result<Json> setQuota(const Actor& actor, std::string_view subject, const Json& body);
  Status deleteQuota(const Actor& actor, std::string_view subject);
  Result<Json> usage(const Actor& actor, std::int64_t userId);

 private:
  BrokerContext& ctx_;
};

}  // namespace aula::broker
