// Rate limiting of failed logins, per user name and per client address, in
// memory. Each failure past the allowance doubles the wait, up to a cap, so a
// guesser slows down fast while a student who mistypes twice is not locked out.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "aula/common/clock.hpp"

namespace aula::broker {

struct ThrottleSettings {
  int maxFailuresPerUser = 5;
  int maxFailuresPerAddress = 30;
  std::chrono::seconds window{300};
  std::chrono::seconds firstLockout{30};
  std::chrono::seconds maxLockout{900};
};

class LoginThrottle {
 public:
  LoginThrottle(const Clock& clock, ThrottleSettings settings)
      : clock_(clock), settings_(settings) {}

  struct Block {
    std::chrono::seconds retryAfter;
    bool byAddress;  // else by user
  };
  // A block in force for this user or address, or none.
  std::optional<Block> check(const std::string& username, const std::string& address);
  void recordFailure(const std::string& username, const std::string& address);
  void recordSuccess(const std::string& username);

 private:
  struct Entry {
    int failures = 0;
    Clock::TimePoint firstFailure{};
    Clock::TimePoint blockedUntil{};
  };
  std::optional<std::chrono::seconds> blockedFor(std::unordered_map<std::string, Entry>& map,
                                                 const std::string& key);
  void fail(std::unordered_map<std::string, Entry>& map, const std::string& key, int allowance);

  const Clock& clock_;
  ThrottleSettings settings_;
  std::mutex mutex_;
  std::unordered_map<std::string, Entry> users_;
  std::unordered_map<std::string, Entry> addresses_;
};

}  // namespace aula::broker
