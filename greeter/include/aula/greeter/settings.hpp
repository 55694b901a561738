// Where the greeter finds its broker: the kernel command line (what iPXE
// boots a lab PC with), a config file, and flags, flags winning over the
// file and the file over the command line.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "aula/common/result.hpp"
#include "aula/greeter/greeter.hpp"

namespace aula::greeter {

struct StartSettings {
  std::string brokerUrl;      // aula.broker=, [greeter] broker_url, --broker
  std::string caFingerprint;  // aula.ca_fp=, [greeter] ca_fingerprint, --ca-fingerprint
  std::string caFile;         // [greeter] ca_file, --ca-file (instead of the fingerprint)
  Language language = Language::kEnglish;  // aula.lang=, [greeter] language, --language
  // The ALSA device the desktop's sound plays on; empty: none ("off").
  // aula.audio=, [greeter] audio_device, --audio-device.
  std::string audioDevice = "default";
};

// The aula.* parameters of a kernel command line ("aula.broker=https://..."),
// with double quotes around values that hold spaces.
std::map<std::string, std::string> kernelParameters(std::string_view cmdline);

// One source's settings: the keys broker_url, ca_fingerprint, ca_file,
// language and audio_device, each optional.
using SettingsSource = std::map<std::string, std::string>;

// Merges the sources, later ones winning, and checks the result: an https
// URL, a fingerprint of 32 bytes (or a CA file), a known language. Errors
// name the setting and each place it can be given.
Result<StartSettings> resolveSettings(const std::map<std::string, std::string>& kernel,
                                      const SettingsSource& file, const SettingsSource& flags);

}  // namespace aula::greeter
