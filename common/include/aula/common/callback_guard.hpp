// The one guard for code that C libraries call back (libvirt events, the
// mbedTLS RNG, curl, libpq notices, GLib signals): an exception must never
// unwind through C frames, so each callback body runs inside guardCallback,
// which logs what escaped and returns the fallback the C library expects.
// The same idea as sdbus-c++'s invokeHandlerAndCatchErrors.
#pragma once

#include <exception>
#include <string_view>
#include <type_traits>
#include <utility>

namespace aula {

namespace detail {
// Logs an exception that reached a C callback; never throws.
void logEscapedException(std::string_view where, const std::exception* e) noexcept;
}  // namespace detail

// Runs `body()`; returns its value, or `fallback` when it threw.
template <typename R, typename F>
R guardCallback(std::string_view where, R fallback, F&& body) noexcept {
  try {
    return std::forward<F>(body)();
  } catch (const std::exception& e) {
    detail::logEscapedException(where, &e);
  } catch (...) {
    detail::logEscapedException(where, nullptr);
  }
  return fallback;
}

// For callbacks that return nothing.
template <typename F>
void guardCallback(std::string_view where, F&& body) noexcept {
  try {
    std::forward<F>(body)();
  } catch (const std::exception& e) {
    detail::logEscapedException(where, &e);
  } catch (...) {
    detail::logEscapedException(where, nullptr);
  }
}

}  // namespace aula
