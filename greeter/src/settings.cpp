// The greeter's start settings from the kernel command line, a file and
// flags.
#include "aula/greeter/settings.hpp"

#include "aula/common/crypto.hpp"

namespace aula::greeter {

std::map<std::string, std::string> kernelParameters(std::string_view cmdline) {
  std::map<std::string, std::string> parameters;
  std::size_t at = 0;
  while (at < cmdline.size()) {
    while (at < cmdline.size() &&
           (cmdline[at] == ' ' || cmdline[at] == '\n' || cmdline[at] == '\t'))
      ++at;
    std::string word;
    bool quoted = false;
    for (; at < cmdline.size(); ++at) {
      const char c = cmdline[at];
      if (c == '"') {
        quoted = !quoted;
        continue;
      }
      if (!quoted && (c == ' ' || c == '\n' || c == '\t'))
        break;
      word.push_back(c);
    }
    if (!word.starts_with("aula."))
      continue;
    const auto equals = word.find('=');
    if (equals == std::string::npos)
      parameters[word] = "";
    else
      parameters[word.substr(0, equals)] = word.substr(equals + 1);
  }
  return parameters;
}

Result<StartSettings> resolveSettings(const std::map<std::string, std::string>& kernel,
                                      const SettingsSource& file, const SettingsSource& flags) {
  SettingsSource merged;
  const std::map<std::string, std::string> fromKernel = {{"aula.broker", "broker_url"},
                                                         {"aula.ca_fp", "ca_fingerprint"},
                                                         {"aula.lang", "language"},
                                                         {"aula.audio", "audio_device"}};
  for (const auto& [parameter, key] : fromKernel) {
    if (auto it = kernel.find(parameter); it != kernel.end())
      merged[key] = it->second;
  }
  for (const auto* source : {&file, &flags}) {
    for (const auto& [key, value] : *source)
      merged[key] = value;
  }
  StartSettings settings;
  settings.brokerUrl = merged["broker_url"];
  if (settings.brokerUrl.empty()) {
    return makeError(
        Errc::kConfig,
        "The greeter does not know its Aula server: boot with aula.broker=https://HOST:PORT "
        "on the kernel command line, set broker_url in the config file, or pass --broker.");
  }
  if (!settings.brokerUrl.starts_with("https://")) {
    return makeError(Errc::kConfig,
                     "The Aula server's address '{}' must start with https://: the greeter sends "
                     "passwords to it.",
                     settings.brokerUrl);
  }
  settings.caFile = merged["ca_file"];
  if (settings.caFile.empty()) {
    const std::string& fingerprint = merged["ca_fingerprint"];
    if (fingerprint.empty()) {
      return makeError(Errc::kConfig,
                       "The greeter does not know which CA to trust: boot with aula.ca_fp=<the "
                       "SHA-256 fingerprint of the broker's CA>, set ca_fingerprint in the config "
                       "file, or pass --ca-fingerprint (or --ca-file).");
    }
    auto normalized = crypto::normalizeFingerprint(fingerprint);
    if (!normalized) {
      // crypto's message names the value and what a fingerprint looks like.
      return Error(Errc::kConfig, fmt::format("The CA fingerprint (aula.ca_fp, ca_fingerprint or "
                                              "--ca-fingerprint) is wrong: {}",
                                              normalized.error().message()));
    }
    settings.caFingerprint = *normalized;
  }
  if (const std::string& code = merged["language"]; !code.empty()) {
    auto language = languageFromCode(code);
    if (!language) {
      return makeError(Errc::kConfig,
                       "The language '{}' is not one the greeter speaks: use en, es, ca or fr.",
                       code);
    }
    settings.language = *language;
  }
  if (auto it = merged.find("audio_device"); it != merged.end()) {
    if (it->second.empty()) {
      return makeError(Errc::kConfig,
                       "The sound device (aula.audio, audio_device or --audio-device) is empty: "
                       "name an ALSA device such as default or hw:0,0, or say off.");
    }
    settings.audioDevice = it->second == "off" ? "" : it->second;
  }
  return settings;
}

}  // namespace aula::greeter
