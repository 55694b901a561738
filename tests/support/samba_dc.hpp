// A throw-away Active Directory domain controller for tests: Debian's Samba
// provisioned in AD DC mode (realm AULA.TEST, no DNS) in a temporary
// directory, serving LDAP only on 127.0.0.1:389 (AD's port cannot be
// moved), stopped and removed when the object goes away. Simple
// binds over plain LDAP are allowed, as a school's test domain would be set
// up for a first trial; real ones use LDAPS or StartTLS.
//
// Fails by throwing; tests call available() first and skip, with the
// reason, where Samba's AD DC is not installed or the test is not root.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <sys/types.h>

#include "support/temp_dir.hpp"

namespace aula::test {

class SambaDc {
 public:
  static constexpr const char* kBaseDn = "DC=aula,DC=test";
  static constexpr const char* kAdminDn = "CN=Administrator,CN=Users,DC=aula,DC=test";
  static constexpr const char* kAdminPassword = "Adm1n-Secret!";

  static bool available(std::string* why);

  SambaDc();
  ~SambaDc();
  SambaDc(const SambaDc&) = delete;
  SambaDc& operator=(const SambaDc&) = delete;

  std::string uri() const;  // "ldap://127.0.0.1"
  // Users and groups go in CN=Users; a group may hold groups (nesting).
  void addUser(const std::string& name, const std::string& password,
               const std::string& displayName);
  void deleteUser(const std::string& name);
  void addGroup(const std::string& name);
  void addMembers(const std::string& group, const std::vector<std::string>& members);
  void removeMembers(const std::string& group, const std::vector<std::string>& members);
  static std::string dnOf(const std::string& name);  // "CN=name,CN=Users,DC=aula,DC=test"

  // The broker's [ldap] table for this domain (sAMAccountName, the
  // Administrator as service account, nested groups by the in-chain rule),
  // its password written to `passwordFile`; callers add their group tables.
  std::string brokerToml(const std::filesystem::path& passwordFile) const;

 private:
  void tool(std::vector<std::string> args);
  TempDir dir_;
  pid_t pid_ = -1;
};

}  // namespace aula::test
