#include "alsa_playback.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include <alsa/asoundlib.h>

#include "aula/common/log.hpp"

namespace aula::greeter {

namespace {

constexpr unsigned kLatencyUs = 200'000;

}  // namespace

void applyVolume(std::span<std::int16_t> samples, int channels, const Volume& volume) {
  if (channels < 1)
    return;
  if (volume.muted) {
    std::fill(samples.begin(), samples.end(), std::int16_t{0});
    return;
  }
  if (volume.levels.empty())
    return;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto channel = std::min(i % static_cast<std::size_t>(channels), volume.levels.size() - 1);
    const std::int32_t level = volume.levels[channel];
    if (level == 65535)
      continue;
    samples[i] = static_cast<std::int16_t>(static_cast<std::int32_t>(samples[i]) * level / 65535);
  }
}

AlsaPlayback::AlsaPlayback(std::string device) : device_(std::move(device)) {}

AlsaPlayback::~AlsaPlayback() {
  stop();
}

Status AlsaPlayback::start(int channels, int rate) {
  stop();
  if (channels < 1 || channels > 8 || rate < 8000 || rate > 192000) {
    return makeError(Errc::kInvalidArgument,
                     "The desktop sends sound as {} channel(s) at {} Hz, which is not sound "
                     "this PC plays.",
                     channels, rate);
  }
  snd_pcm_t* pcm = nullptr;
  if (int err = snd_pcm_open(&pcm, device_.c_str(), SND_PCM_STREAM_PLAYBACK, SND_PCM_NONBLOCK);
      err < 0) {
    return makeError(Errc::kUnavailable, "ALSA cannot open the sound device '{}': {}.", device_,
                     snd_strerror(err));
  }
  if (int err = snd_pcm_set_params(pcm, SND_PCM_FORMAT_S16_LE, SND_PCM_ACCESS_RW_INTERLEAVED,
                                   static_cast<unsigned>(channels), static_cast<unsigned>(rate), 1,
                                   kLatencyUs);
      err < 0) {
    snd_pcm_close(pcm);
    return makeError(Errc::kUnavailable,
                     "The sound device '{}' cannot play {} channel(s) of 16-bit sound at {} Hz: "
                     "{}.",
                     device_, channels, rate, snd_strerror(err));
  }
  pcm_ = pcm;
  frameBytes_ = 2 * channels;
  return {};
}

void AlsaPlayback::write(const void* data, std::size_t bytes) {
  if (pcm_ == nullptr || frameBytes_ == 0)
    return;
  auto frames = static_cast<snd_pcm_uframes_t>(bytes / static_cast<std::size_t>(frameBytes_));
  const auto* at = static_cast<const char*>(data);
  if (volume_.muted || !volume_.levels.empty()) {
    scaled_.resize(frames * static_cast<std::size_t>(frameBytes_ / 2));
    std::memcpy(scaled_.data(), data, scaled_.size() * sizeof(std::int16_t));
    applyVolume(scaled_, frameBytes_ / 2, volume_);
    at = reinterpret_cast<const char*>(scaled_.data());
  }
  bool recovered = false;
  while (frames > 0) {
    snd_pcm_sframes_t done = snd_pcm_writei(pcm_, at, frames);
    if (done == -EAGAIN)
      break;  // full: drop the rest
    if (done < 0) {
      if (recovered || snd_pcm_recover(pcm_, static_cast<int>(done), 1) < 0) {
        log::warn("The sound device '{}' failed: {}; the desktop's sound stops.", device_,
                  snd_strerror(static_cast<int>(done)));
        stop();
        return;
      }
      recovered = true;
      continue;
    }
    written_ += static_cast<std::uint64_t>(done);
    frames -= static_cast<snd_pcm_uframes_t>(done);
    at += done * frameBytes_;
  }
  dropped_ += frames;
}

void AlsaPlayback::stop() {
  if (pcm_ == nullptr)
    return;
  snd_pcm_drop(pcm_);
  snd_pcm_close(pcm_);
  pcm_ = nullptr;
}

}  // namespace aula::greeter
