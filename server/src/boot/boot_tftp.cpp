// The broker's TFTP answers (see boot_tftp.hpp).
#include "aula/broker/boot_tftp.hpp"

#include <algorithm>
#include <map>
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
      // The query GRUB filled in; a malformed one is a request without
      // settings, answered like the bootstrap.
      std::map<std::string, std::string> query;
      if (!bootstrap && name.size() > 9 && !http::parseQuery(name.substr(10), query))
        query.clear();
      // The broker's HTTPS URL for the PC is on the address it reached us at.
      const BootRequest request = bootRequestFrom(query, r.localHost.find(':') != std::string::npos
                                                             ? "[" + r.localHost + "]"
                                                             : r.localHost);
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
