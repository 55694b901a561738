// Runs a function when a scope ends, unless dismissed: undo steps for
// multi-step changes ("remove the overlay again if the start fails").
#pragma once

#include <utility>

namespace aula {

template <typename F>
class ScopeGuard {
 public:
  explicit ScopeGuard(F f) : f_(std::move(f)) {}
  ~ScopeGuard() {
    if (armed_)
      f_();
  }
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;
  // The step succeeded: nothing to undo.
  void dismiss() { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

template <typename F>
ScopeGuard(F) -> ScopeGuard<F>;

}  // namespace aula
