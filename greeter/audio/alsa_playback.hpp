// The desktop's sound on this PC: the SPICE playback channel's samples
// written to an ALSA device as they come. A thin adapter over libasound;
// tests point it at ALSA's own file plugin ("file:FILE=/path"), the same
// code that plays on a sound card.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "aula/common/result.hpp"

// libasound's own handle type, declared as <alsa/pcm.h> does, so that only
// the adapter includes ALSA.
using snd_pcm_t = struct _snd_pcm;  // NOLINT(bugprone-reserved-identifier)

namespace aula::greeter {

// The desktop's volume as SPICE gives it: a level per channel from 0 (silent)
// to 65535 (as sent), and mute. QEMU hands the guest's mixer to the client
// this way instead of scaling the samples itself.
struct Volume {
  std::vector<std::uint16_t> levels;  // empty: full volume
  bool muted = false;
};

// Scales interleaved 16-bit frames of `channels` by `volume`, linearly as
// QEMU's own mixer does (a channel without a level of its own takes the
// last one).
void applyVolume(std::span<std::int16_t> samples, int channels, const Volume& volume);

class AlsaPlayback {
 public:
  // An ALSA device name: "default", "hw:0,0", "file:FILE=/tmp/desktop.raw".
  explicit AlsaPlayback(std::string device);
  ~AlsaPlayback();
  AlsaPlayback(const AlsaPlayback&) = delete;
  AlsaPlayback& operator=(const AlsaPlayback&) = delete;

  // Opens the device for interleaved signed 16-bit little-endian frames
  // (what SPICE sends), with 200 ms of buffer. Closes what was open first.
  Status start(int channels, int rate);
  // Writes what the device takes now and drops the rest: the desktop's
  // sound must never hold up its screen. After an underrun the device is
  // prepared again and the write tried once more.
  void write(const void* data, std::size_t bytes);
  // The desktop's volume for what is written from now on.
  void setVolume(Volume volume) { volume_ = std::move(volume); }
  const Volume& volume() const { return volume_; }
  void stop();
  bool playing() const { return pcm_ != nullptr; }

  const std::string& device() const { return device_; }
  std::uint64_t framesWritten() const { return written_; }
  std::uint64_t framesDropped() const { return dropped_; }

 private:
  std::string device_;
  snd_pcm_t* pcm_ = nullptr;
  int frameBytes_ = 0;
  std::uint64_t written_ = 0;
  std::uint64_t dropped_ = 0;
  Volume volume_;
  std::vector<std::int16_t> scaled_;  // write's samples at volume_
};

}  // namespace aula::greeter
