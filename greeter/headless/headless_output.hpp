// An Output in memory: the greeter's screens for tests, docs and benchmarks,
// written out as PNG files. Each head is a size given at construction and
// one buffer: what is drawn is what is shown once presented (the runtime
// and the tests run on one thread), so it costs what the KMS output's
// shadow buffer costs.
#pragma once

#include <filesystem>
#include <vector>

#include "aula/greeter/output.hpp"

namespace aula::greeter {

struct HeadSize {
  int width = 1280;
  int height = 1024;
};

class HeadlessOutput final : public Output {
 public:
  explicit HeadlessOutput(const std::vector<HeadSize>& heads);

  int heads() const override { return static_cast<int>(heads_.size()); }
  Canvas canvas(int head) override;
  Status present(int head, std::span<const Rect> damage) override;

  // What was last presented on a head (read it, do not draw).
  Canvas shown(int head);
  int presented(int head) const { return heads_.at(static_cast<std::size_t>(head)).frames; }
  Status writePng(int head, const std::filesystem::path& path);

 private:
  struct Head {
    HeadSize size;
    std::vector<std::uint32_t> pixels;
    int frames = 0;
  };
  std::vector<Head> heads_;
};

}  // namespace aula::greeter
