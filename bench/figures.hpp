// Small helpers the benchmark programs share: a median and a process's
// resident memory.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include <sys/types.h>

namespace aula::bench {

// The middle value (the upper one of an even count); 0 for none.
inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

// VmRSS of a process in KiB, from /proc; 0 when it is gone.
inline long rssKib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:"))
      return std::atol(line.c_str() + 6);
  }
  return 0;
}

// A benchmark's whole main: whatever `run` throws is printed as one line
// and the program exits 1, instead of std::terminate's abort.
template <typename Run>
int guardedMain(const char* name, Run run) noexcept {
  try {
    return run();
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "%s: %s\n", name, e.what());
  } catch (...) {
    (void)std::fprintf(stderr, "%s: failed with an unknown exception\n", name);
  }
  return 1;
}

}  // namespace aula::bench
