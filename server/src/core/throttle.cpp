// Failed-login rate limiting.
#include "aula/broker/throttle.hpp"

#include <algorithm>

namespace aula::broker {

std::optional<std::chrono::seconds> LoginThrottle::blockedFor(
    std::unordered_map<std::string, Entry>& map, const std::string& key) {
  auto it = map.find(key);
  if (it == map.end())
    return std::nullopt;
  auto now = clock_.now();
  if (now < it->second.blockedUntil) {
    auto left = std::chrono::ceil<std::chrono::seconds>(it->second.blockedUntil - now);
    return std::max(left, std::chrono::seconds(1));
  }
  // Forget failures older than the window, unless a block is still the reason
  // for the count.
  if (now - it->second.firstFailure > settings_.window && now >= it->second.blockedUntil) {
    map.erase(it);
  }
  return std::nullopt;
}

std::optional<LoginThrottle::Block> LoginThrottle::check(const std::string& username,
                                                         const std::string& address) {
  std::lock_guard lock(mutex_);
  if (auto a = blockedFor(addresses_, address))
    return Block{*a, true};
  if (auto u = blockedFor(users_, username))
    return Block{*u, false};
  return std::nullopt;
}

void LoginThrottle::fail(std::unordered_map<std::string, Entry>& map, const std::string& key,
                         int allowance) {
  auto now = clock_.now();
  auto& e = map[key];
  if (e.failures == 0 || now - e.firstFailure > settings_.window) {
    if (now >= e.blockedUntil) {
      e.failures = 0;
      e.firstFailure = now;
    }
  }
  e.failures += 1;
  if (e.failures >= allowance) {
    int over = std::min(e.failures - allowance, 10);
    auto lockout = std::min(settings_.firstLockout * (1 << over), settings_.maxLockout);
    e.blockedUntil = now + lockout;
  }
}

void LoginThrottle::recordFailure(const std::string& username, const std::string& address) {
  std::lock_guard lock(mutex_);
  fail(users_, username, settings_.maxFailuresPerUser);
  fail(addresses_, address, settings_.maxFailuresPerAddress);
  // Bound memory under a spray of random names (forgetting is the safe side:
  // a guesser gets a fresh allowance, nobody gets locked out for good).
  if (users_.size() > 100000)
    users_.clear();
  if (addresses_.size() > 100000)
    addresses_.clear();
}

void LoginThrottle::recordSuccess(const std::string& username) {
  std::lock_guard lock(mutex_);
  users_.erase(username);
}

}  // namespace aula::broker
