// Outputs on real screens: KMS (libdrm: one dumb buffer per connected
// connector, its preferred mode) and, where the GPU has no driver in the
// image, the firmware's framebuffer (/dev/fb0, efifb). Both draw into a
// shadow buffer in RAM and copy only the damaged rows to the scanout buffer,
// which is write-combined memory: reading it is slow, writing it is not.
// The device fds come from the seat (logind or seatd, through libseat); the
// greeter never opens them as root.
#pragma once

#include <memory>
#include <vector>

#include "aula/common/file.hpp"
#include "aula/greeter/output.hpp"

namespace aula::greeter {

class KmsOutput final : public Output {
 public:
  // Sets the preferred mode on every connected connector of the DRM device;
  // an error names the device and what it lacks.
  static Result<std::unique_ptr<KmsOutput>> open(int drmFd, std::string device);
  ~KmsOutput() override;

  int heads() const override;
  Canvas canvas(int head) override;
  Status present(int head, std::span<const Rect> damage) override;

  struct Head;

 private:
  KmsOutput(int fd, std::string device);
  int fd_;
  std::string device_;
  std::vector<std::unique_ptr<Head>> heads_;
};

class FbdevOutput final : public Output {
 public:
  static Result<std::unique_ptr<FbdevOutput>> open(file::UniqueFd fd, std::string device);
  ~FbdevOutput() override;

  int heads() const override { return 1; }
  Canvas canvas(int head) override;
  Status present(int head, std::span<const Rect> damage) override;

 private:
  FbdevOutput() = default;
  file::UniqueFd fd_;
  std::string device_;
  std::uint8_t* map_ = nullptr;
  std::size_t mapSize_ = 0;
  int width_ = 0;
  int height_ = 0;
  int lineLength_ = 0;
  std::vector<std::uint32_t> shadow_;
};

}  // namespace aula::greeter
