// The greeter's ALSA adapter, on ALSA's own file plugin: what a sound card
// would play lands in a file, byte for byte.
#include "alsa_playback.hpp"

#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "support/temp_dir.hpp"

namespace aula::greeter {
namespace {

TEST(AlsaPlaybackTest, FramesGoToTheDeviceAsTheyCome) {
  test::TempDir dir;
  const auto file = dir.path() / "played.raw";
  AlsaPlayback playback("file:FILE=" + file.string());
  ASSERT_TRUE(playback.start(2, 48000));
  std::vector<std::int16_t> frames(2 * 4800);  // 100 ms of stereo
  for (std::size_t i = 0; i < frames.size(); ++i)
    frames[i] = static_cast<std::int16_t>((i % 100) * 300 - 15000);
  playback.write(frames.data(), frames.size() * sizeof(std::int16_t));
  EXPECT_EQ(playback.framesWritten() + playback.framesDropped(), 4800u);
  playback.stop();
  EXPECT_FALSE(playback.playing());
  const std::string played = test::readFile(file);
  ASSERT_EQ(played.size(), playback.framesWritten() * 4);
  ASSERT_GE(played.size(), 4u);
  std::int16_t first = 0;
  std::memcpy(&first, played.data(), 2);
  EXPECT_EQ(first, -15000);
}

TEST(AlsaPlaybackTest, TheDesktopsVolumeScalesEachChannelAndMuteSilencesAll) {
  std::vector<std::int16_t> frames{10000, -10000, 32767, -32768};
  auto scaled = frames;
  applyVolume(scaled, 2, Volume{});
  EXPECT_EQ(scaled, frames);  // no level said: as sent
  applyVolume(scaled, 2, Volume{.levels = {65535, 65535}});
  EXPECT_EQ(scaled, frames);
  applyVolume(scaled, 2, Volume{.levels = {32768, 0}});  // left at half, right silent
  EXPECT_EQ(scaled, (std::vector<std::int16_t>{5000, 0, 16383, 0}));
  scaled = frames;
  applyVolume(scaled, 2, Volume{.levels = {6554}});  // one level for both: 10%
  EXPECT_EQ(scaled, (std::vector<std::int16_t>{1000, -1000, 3276, -3277}));
  scaled = frames;
  applyVolume(scaled, 2, Volume{.levels = {65535, 65535}, .muted = true});
  EXPECT_EQ(scaled, (std::vector<std::int16_t>(4, 0)));
}

TEST(AlsaPlaybackTest, WhatIsPlayedFollowsTheVolumeAndTheCallersSamplesStayAsTheyWere) {
  test::TempDir dir;
  const auto file = dir.path() / "played.raw";
  AlsaPlayback playback("file:FILE=" + file.string());
  ASSERT_TRUE(playback.start(1, 8000));
  playback.setVolume(Volume{.levels = {16384}});  // a quarter
  std::vector<std::int16_t> frames(800, 20000);
  playback.write(frames.data(), frames.size() * sizeof(std::int16_t));
  EXPECT_EQ(frames.front(), 20000);
  playback.setVolume(Volume{.levels = {16384}, .muted = true});
  playback.write(frames.data(), frames.size() * sizeof(std::int16_t));
  playback.stop();
  const std::string played = test::readFile(file);
  ASSERT_EQ(played.size(), playback.framesWritten() * 2);
  ASSERT_EQ(played.size(), 3200u);
  std::vector<std::int16_t> got(played.size() / 2);
  std::memcpy(got.data(), played.data(), played.size());
  EXPECT_EQ(got.front(), 5000);
  EXPECT_EQ(got[799], 5000);
  EXPECT_EQ(got[800], 0);
  EXPECT_EQ(got.back(), 0);
}

TEST(AlsaPlaybackTest, ADeviceThatIsNotThereIsNamedAndNothingPlays) {
  AlsaPlayback playback("hw:97,0");
  auto started = playback.start(2, 48000);
  ASSERT_FALSE(started);
  EXPECT_NE(started.error().message().find("'hw:97,0'"), std::string::npos)
      << started.error().message();
  EXPECT_FALSE(playback.playing());
  std::int16_t frame[2] = {1, 2};
  playback.write(frame, sizeof frame);  // no device: dropped quietly
  EXPECT_EQ(playback.framesWritten(), 0u);
}

TEST(AlsaPlaybackTest, SoundThatIsNoSoundIsRefusedWithWhatCame) {
  test::TempDir dir;
  AlsaPlayback playback("file:FILE=" + (dir.path() / "x.raw").string());
  auto started = playback.start(0, 48000);
  ASSERT_FALSE(started);
  EXPECT_NE(started.error().message().find("0 channel(s) at 48000 Hz"), std::string::npos)
      << started.error().message();
}

}  // namespace
}  // namespace aula::greeter
