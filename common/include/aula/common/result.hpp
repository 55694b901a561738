// Result<T> and Error: how every expected failure in Aula travels.
//
// An Error carries a code a program can branch on, one whole sentence a person
// can act on, and the native code of the layer that failed (errno, a libvirt or
// curl or mbedTLS code) for logs. Bugs are assertions, not Errors.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace aula {

enum class Errc {
  kInvalidArgument,    // the caller's input is wrong
  kNotFound,           // the thing named does not exist
  kAlreadyExists,      // the name is taken
  kConflict,           // the state does not allow it right now
  kPermissionDenied,   // authenticated, but not allowed
  kUnauthenticated,    // who you are is unknown or wrong
  kRateLimited,        // too many attempts; try later
  kQuotaExceeded,      // a limit would be passed
  kUnavailable,        // a service we need is away; try later
  kConnectionRefused,  // nothing listens there
  kTimeout,            // no answer in time
  kTls,                // a TLS handshake or certificate check failed
  kIo,                 // reading or writing a file or socket failed
  kParse,              // bytes that should be a format are not
  kConfig,             // configuration is missing or wrong
  kInternal,           // something we did not expect; see the log
};

// A stable lower-case name of the code, used in logs and API error bodies.
std::string_view errcName(Errc code);
// The code of a name errcName() gave; none for any other text.
std::optional<Errc> errcFromName(std::string_view name);

class Error {
 public:
  Error(Errc code, std::string message, int native = 0)
      : code_(code), message_(std::move(message)), native_(native) {}

  Errc code() const { return code_; }
  const std::string& message() const { return message_; }
  int native() const { return native_; }

  // Same code and native code, with a sentence of context placed first:
  // "Cannot load the broker configuration. <original sentence>"
  Error context(std::string_view sentence) const {
    return Error(code_, fmt::format("{} {}", sentence, message_), native_);
  }

 private:
  Errc code_;
  std::string message_;
  int native_;
};

// Shorthand for a formatted error: makeError(Errc::kNotFound, "No user named '{}'.", name).
template <typename... Args>
Error makeError(Errc code, fmt::format_string<Args...> format, Args&&... args) {
  return Error(code, fmt::format(format, std::forward<Args>(args)...));
}

template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  template <typename U = T, typename = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                                        !std::is_same_v<std::decay_t<U>, Error> &&
                                                        !std::is_same_v<std::decay_t<U>, Result>>>
  Result(U&& value) : data_(std::in_place_index<0>, std::forward<U>(value)) {}  // NOLINT
  Result(Error error) : data_(std::in_place_index<1>, std::move(error)) {}      // NOLINT

  bool ok() const { return data_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok() && "Result::value() on an error");
    return std::get<0>(data_);
  }
  const T& value() const& {
    assert(ok() && "Result::value() on an error");
    return std::get<0>(data_);
  }
  T&& value() && {
    assert(ok() && "Result::value() on an error");
    return std::get<0>(std::move(data_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const& {
    assert(!ok() && "Result::error() on a value");
    return std::get<1>(data_);
  }
  Error&& error() && {
    assert(!ok() && "Result::error() on a value");
    return std::get<1>(std::move(data_));
  }

  template <typename U>
  T valueOr(U&& fallback) const& {
    return ok() ? value() : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::variant<T, Error> data_;
};

// Result<void>: success carries nothing.
template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;

  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const { assert(ok_ && "Result::value() on an error"); }
  const Error& error() const& {
    assert(!ok_ && "Result::error() on a value");
    return error_;
  }
  Error&& error() && {
    assert(!ok_ && "Result::error() on a value");
    return std::move(error_);
  }

 private:
  Error error_{Errc::kInternal, ""};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status okStatus() {
  return {};
}

}  // namespace aula

#define AULA_CONCAT_INNER_(a, b) a##b
#define AULA_CONCAT_(a, b) AULA_CONCAT_INNER_(a, b)

// AULA_TRY(expr): evaluate a Result; on error return the error from the
// enclosing function, else yield the value. (A GNU statement expression, which
// GCC and Clang both support; the variable is unique so the macro nests.)
#define AULA_TRY(expr) AULA_TRY_IMPL_(expr, AULA_CONCAT_(aulaTryResult_, __COUNTER__))
#define AULA_TRY_IMPL_(expr, var)                                         \
  ({                                                                      \
    auto&& var = (expr); /* NOLINT(bugprone-macro-parentheses): a name */ \
    if (!(var).ok())                                                      \
      return std::move(var).error();                                      \
    std::move(var).value();                                               \
  })

// AULA_TRY_STATUS(expr): the same for a Status, as a statement.
#define AULA_TRY_STATUS(expr) AULA_TRY_STATUS_IMPL_(expr, AULA_CONCAT_(aulaTryStatus_, __COUNTER__))
#define AULA_TRY_STATUS_IMPL_(expr, var)                                  \
  do {                                                                    \
    auto&& var = (expr); /* NOLINT(bugprone-macro-parentheses): a name */ \
    if (!(var).ok())                                                      \
      return std::move(var).error();                                      \
  } while (false)
