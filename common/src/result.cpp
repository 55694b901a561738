// Names of error codes, as they appear in logs and in API error bodies.
#include "aula/common/result.hpp"

namespace aula {

std::string_view errcName(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
      return "invalid_argument";
    case Errc::kNotFound:
      return "not_found";
    case Errc::kAlreadyExists:
      return "already_exists";
    case Errc::kConflict:
      return "conflict";
    case Errc::kPermissionDenied:
      return "permission_denied";
    case Errc::kUnauthenticated:
      return "unauthenticated";
    case Errc::kRateLimited:
      return "rate_limited";
    case Errc::kQuotaExceeded:
      return "quota_exceeded";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kConnectionRefused:
      return "connection_refused";
    case Errc::kTimeout:
      return "timeout";
    case Errc::kTls:
      return "tls";
    case Errc::kIo:
      return "io";
    case Errc::kParse:
      return "parse";
    case Errc::kConfig:
      return "config";
    case Errc::kInternal:
      return "internal";
  }
  return "internal";
}

std::optional<Errc> errcFromName(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(Errc::kInternal); ++i) {
    auto code = static_cast<Errc>(i);
    if (errcName(code) == name)
      return code;
  }
  return std::nullopt;
}

}  // namespace aula
