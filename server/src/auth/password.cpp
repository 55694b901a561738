// argon2id hashing of passwords.
#include "aula/broker/password.hpp"

#include <argon2.h>

#include "aula/common/crypto.hpp"

namespace aula::broker {

Result<std::string> hashPassword(std::string_view password, const Argon2Params& params) {
  auto salt = AULA_TRY(crypto::randomBytes(16));
  constexpr std::size_t kHashLen = 32;
  std::size_t encodedLen =
      argon2_encodedlen(params.iterations, params.memoryKib, params.parallelism,
                        static_cast<std::uint32_t>(salt.size()), kHashLen, Argon2_id);
  std::string encoded(encodedLen, '\0');
  int rc = argon2id_hash_encoded(params.iterations, params.memoryKib, params.parallelism,
                                 password.data(), password.size(), salt.data(), salt.size(),
                                 kHashLen, encoded.data(), encoded.size());
  if (rc != ARGON2_OK) {
    return Error(Errc::kInternal,
                 fmt::format("Cannot hash the password: {}.", argon2_error_message(rc)), rc);
  }
  encoded.resize(std::char_traits<char>::length(encoded.c_str()));
  return encoded;
}

Result<bool> verifyPassword(std::string_view password, std::string_view encoded) {
  std::string enc(encoded);
  int rc = argon2id_verify(enc.c_str(), password.data(), password.size());
  if (rc == ARGON2_OK)
    return true;
  if (rc == ARGON2_VERIFY_MISMATCH)
    return false;
  return Error(Errc::kInternal,
               fmt::format("Cannot check the password against the stored hash: {}.",
                           argon2_error_message(rc)),
               rc);
}

Status checkPasswordPolicy(std::string_view password) {
  if (password.size() < 8) {
    return Error(Errc::kInvalidArgument, "The password must have at least 8 characters.");
  }
  if (password.size() > 1024) {
    return Error(Errc::kInvalidArgument, "The password must have at most 1024 bytes.");
  }
  return {};
}

}  // namespace aula::broker
