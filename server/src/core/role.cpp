// Role names as the API and the database spell them.
#include "aula/broker/context.hpp"

namespace aula::broker {

std::string_view roleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kManager:
      return "manager";
    case Role::kAdvanced:
      return "advanced";
    case Role::kUser:
      return "user";
  }
  return "user";
}

std::optional<Role> parseRole(std::string_view name) {
  if (name == "admin")
    return Role::kAdmin;
  if (name == "manager")
    return Role::kManager;
  if (name == "advanced")
    return Role::kAdvanced;
  if (name == "user")
    return Role::kUser;
  return std::nullopt;
}

}  // namespace aula::broker
