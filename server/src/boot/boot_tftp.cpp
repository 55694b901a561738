// The broker's TFTP answers (see boot_tftp.hpp).
#include "aula/broker/boot_tftp.hpp"

#include <algorithm>
#include <vector>

#include "aula/broker/broker.hpp"
#include "aula/common/http_server.hpp"
#include "aula/common/log.hpp"

#include "boot/grub_script.hpp"

namespace aula::broker {

namespace {

namespace fs = std::filesystem;

// `text` cut at each `separator`.
std::vector<std::string_view> splitAt(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  for (std::size_t from = 0;;) {
    const auto at = text.find(separator, from);
    parts.push_back(text.substr(from, at == std::string_view::npos ? at : at - from));
    if (at == std::string_view::npos)
      return parts;
    from = at + 1;
  }
}

// "a=1&b=2" as BootRequest's fields; GRUB sends them as they are.
BootRequest parseGrubQuery(std::string_view query) {
  BootRequest request;
  for (std::string_view pair : splitAt(query, '&')) {
    const auto eq = pair.find('=');
    const std::string_view name = pair.substr(0, eq);
    std::string value;
    if (eq != std::string_view::npos && !http::urlDecode(pair.substr(eq + 1), value, false))
      value = pair.substr(eq + 1);
    if (name == "mac") {
      request.hasMac = true;
      request.mac = value;
    } else if (name == "ip") {
      request.ip = value;
    } else if (name == "platform") {
      request.platform = value;
    } else if (name == "buildarch") {
      request.buildarch = value;
    }
  }
  return request;
}

}  // namespace

tftp::Handler bootTftpHandler(Broker& broker) {
  return [&broker](const tftp::Request& r) -> Result<tftp::File> {
    std::string_view name = r.name;
    while (name.starts_with('/'))
      name.remove_prefix(1);
    if (std::ranges::find(kLoaders, name) != std::end(kLoaders)) {
      const fs::path dir = broker.settings.boot.loadersDir;
      std::error_code ec;
      if (dir.empty() || !fs::is_regular_file(dir / name, ec)) {
        log::warn(
            "TFTP: {} asked for {}, which is not in boot.loaders_dir ({}); "
            "provisioning/fetch-loaders.sh puts them there.",
            r.peerHost, name, dir.empty() ? "not set" : dir.string());
        return makeError(Errc::kNotFound, "{} is not on this Aula server.", name);
      }
      return tftp::File{.path = dir / name, .bytes = {}};
    }
    const bool bootstrap =
        std::ranges::find(grub::kBootstrapPaths, name) != std::end(grub::kBootstrapPaths);
    if (bootstrap || name == "boot/grub" || name.starts_with("boot/grub?")) {
      BootRequest request;
      if (!bootstrap && name.size() > 9)
        request = parseGrubQuery(name.substr(10));
      // The broker's HTTPS URL for the PC is on the address it reached us at.
      request.host =
          r.localHost.find(':') != std::string::npos ? "[" + r.localHost + "]" : r.localHost;
      auto answer = broker.bootHosts.grub(request);
      if (request.hasMac)
        logBootAnswer(request, answer, r.peerHost, "GRUB");
      return tftp::File{.path = {}, .bytes = std::move(answer.script)};
    }
    if (name.starts_with("boot/images/")) {
      // boot/images/FLAVOUR/VERSION/FILE
      const auto parts = splitAt(name.substr(12), '/');
      if (parts.size() == 3) {
        auto served = AULA_TRY(broker.images.servedFile(parts[0], parts[1], parts[2]));
        return tftp::File{.path = std::move(served.path), .bytes = {}};
      }
    }
    return makeError(Errc::kNotFound, "There is no {} on this Aula server.", name.substr(0, 80));
  };
}

}  // namespace aula::broker
