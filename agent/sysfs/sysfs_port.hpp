// The SysfsPort that binding writes through, on real sysfs under a root
// ("/" in production; a fixture in tests, where a subclass plays the kernel).
#pragma once

#include <filesystem>

#include "aula/agent/passthrough_binding.hpp"

namespace aula::agent {

class RealSysfs : public SysfsPort {
 public:
  explicit RealSysfs(std::filesystem::path root) : root_(std::move(root)) {}

  Result<std::string> driverOf(std::string_view address) override;
  Result<std::string> overrideOf(std::string_view address) override;
  Status write(std::string_view path, std::string_view value) override;
  // Scans <root>/proc/*/fd and maps for the device's nodes and BARs.
  std::vector<DeviceHolder> holders(std::string_view address) override;
  Result<std::string> read(std::string_view path) override;
  std::vector<std::string> list(std::string_view dir) override;

 protected:
  std::filesystem::path sys() const { return root_ / "sys"; }

 private:
  std::filesystem::path root_;
};

}  // namespace aula::agent
