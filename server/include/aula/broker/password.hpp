// Password hashing with argon2id (libargon2), in the PHC string form
// "$argon2id$v=19$m=19456,t=2,p=1$salt$hash", so parameters can be raised
// later without invalidating stored hashes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "aula/common/result.hpp"

namespace aula::broker {

struct Argon2Params {
  std::uint32_t memoryKib = 19456;  // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane
  std::uint32_t iterations = 2;
  std::uint32_t parallelism = 1;
};

Result<std::string> hashPassword(std::string_view password, const Argon2Params& params = {});
// True when `password` matches `encoded`; false for a wrong password;
// kInternal for an unreadable hash.
Result<bool> verifyPassword(std::string_view password, std::string_view encoded);

// Checks a new password: at least 8 characters, at most 1024 bytes.
Status checkPasswordPolicy(std::string_view password);

}  // namespace aula::broker
