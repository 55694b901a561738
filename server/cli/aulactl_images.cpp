// aulactl images: network-boot images, their channels and pins.
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>

#include "aula/common/crypto.hpp"
#include "aula/common/file.hpp"

#include "cli/aulactl_internal.hpp"

namespace aula::ctl::detail {

namespace {

namespace fs = std::filesystem;
using json::Json;

// Each request carries at most this much of a file: under the broker's
// default body limit (limits.max_body_bytes, 1 MiB).
constexpr std::size_t kChunkBytes = std::size_t{512} * 1024;

std::string mib(std::uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

// Uploads DIR (image/build.sh's output for one flavour: manifest.json,
// vmlinuz, initrd.img) and adds it. Each file is checked against the
// manifest here first, so a damaged copy is named before it is sent.
int addImage(const Session& s, const fs::path& dir) {
  auto text = file::readFile(dir / "manifest.json", "the image's manifest");
  if (!text) {
    std::cerr << "aulactl: " << text.error().message()
              << " Give the folder image/build.sh made for one flavour, like OUT/thin.\n";
    return 2;
  }
  auto manifest = json::parse(*text);
  if (!manifest || !manifest->is_object() || !manifest->contains("artefacts")) {
    std::cerr << "aulactl: " << (dir / "manifest.json").string()
              << " is not an image manifest (no 'artefacts').\n";
    return 2;
  }
  const std::string flavour = manifest->value("flavour", "");
  const std::string version = manifest->value("version", "");
  for (const auto& artefact : (*manifest)["artefacts"]) {
    const std::string name = artefact.value("file", "");
    if (name != "vmlinuz" && name != "initrd.img")
      continue;
    const fs::path path = dir / name;
    auto sha = crypto::sha256HexOfFile(path);
    if (!sha) {
      std::cerr << "aulactl: " << sha.error().message() << "\n";
      return 2;
    }
    if (*sha != artefact.value("sha256", "")) {
      std::cerr << "aulactl: " << path.string()
                << " does not match its manifest's SHA-256; build the image again.\n";
      return 2;
    }
    std::ifstream in(path, std::ios::binary);
    std::vector<char> buffer(kChunkBytes);
    std::uint64_t offset = 0;
    const auto size = artefact.value("bytes", std::uint64_t{0});
    std::cerr << fmt::format("Uploading {} ({})...", name, mib(size)) << std::flush;
    auto client = clientFor(s);
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const auto got = static_cast<std::size_t>(in.gcount());
      if (got == 0 && offset > 0)
        break;
      http::Request r;
      r.method = "PUT";
      r.url = fmt::format("{}/api/v1/images/{}/{}/files/{}?offset={}", s.url, flavour, version,
                          name, offset);
      r.headers = {{"Authorization", "Bearer " + s.token},
                   {"Content-Type", "application/octet-stream"}};
      r.body.assign(buffer.data(), got);
      auto response = client.send(r);
      if (!response || response->status >= 400) {
        std::cerr << "\naulactl: "
                  << (response ? http::errorFromResponse(*response, s.url).message()
                               : response.error().message())
                  << "\n";
        return 1;
      }
      offset += got;
    }
    std::cerr << " done.\n";
  }
  auto added = call(s, "POST", "/api/v1/images", *manifest);
  if (!added)
    return 1;
  std::cout << fmt::format(
      "Added the {} image {}. Release it with 'aulactl images promote {} --channel testing'.\n",
      flavour, version, version);
  return 0;
}

}  // namespace

void addImageCommands(CLI::App& app, const bool& asJson, int& exitCode) {
  auto* images = app.add_subcommand(
      "images", "network-boot images: add, list, promote to a channel, roll back, pin PCs");
  images->require_subcommand(1);
  // Strings live as long as the app: CLI11 writes into them at parse time.
  struct Args {
    std::string dir, version, channel, flavour = "thin";
    std::vector<std::string> macs;
    bool follow = false;
  };
  auto owned = std::make_shared<Args>();
  Args& opt = *owned;
  auto withSession = [&exitCode](std::function<int(const Session&)> f) {
    return withSavedSession(exitCode, std::move(f));
  };
  auto show = [&asJson](const std::optional<http::Response>& r,
                        const std::vector<std::string>& columns) {
    if (!r)
      return 1;
    if (r->status == 204 || r->body.empty()) {
      std::cout << "Done.\n";
      return 0;
    }
    auto j = json::parse(r->body);
    if (j)
      output(*j, asJson, columns);
    return 0;
  };

  auto* add = images->add_subcommand("add", "upload an image image/build.sh made and list it");
  add->add_option("dir", opt.dir, "the folder of one flavour, like build/image/thin")->required();
  add->callback(withSession([owned](const Session& s) { return addImage(s, owned->dir); }));

  images->add_subcommand("list", "list the images, with their channels and pinned PCs")
      ->callback(withSession([show](const Session& s) {
        return show(
            call(s, "GET", "/api/v1/images", std::nullopt),
            {"flavour", "version", "bytes", "added_at", "added_by", "channels", "pinned_hosts"});
      }));
  images->add_subcommand("channels", "each channel's current image and the one before it")
      ->callback(withSession([show](const Session& s) {
        return show(call(s, "GET", "/api/v1/image-channels", std::nullopt),
                    {"channel", "flavour", "version", "released_at", "released_by", "previous"});
      }));

  auto* promote = images->add_subcommand("promote", "make an image current on a channel");
  promote->add_option("version", opt.version, "the image's version")->required();
  promote->add_option("--channel", opt.channel, "stable, testing or a site's own")->required();
  promote->add_option("--flavour", opt.flavour, "thin (default) or workstation");
  promote->callback(withSession([show, owned](const Session& s) {
    const Args& args = *owned;
    return show(
        call(s, "POST", "/api/v1/image-channels/" + http::urlEncode(args.channel) + "/promote",
             Json{{"flavour", args.flavour}, {"version", args.version}}),
        {});
  }));

  auto* rollback =
      images->add_subcommand("rollback", "put a channel back on the image it had before");
  rollback->add_option("channel", opt.channel, "the channel")->required();
  rollback->add_option("--flavour", opt.flavour, "thin (default) or workstation");
  rollback->callback(withSession([show, owned](const Session& s) {
    const Args& args = *owned;
    return show(
        call(s, "POST", "/api/v1/image-channels/" + http::urlEncode(args.channel) + "/rollback",
             Json{{"flavour", args.flavour}}),
        {});
  }));

  auto* pin = images->add_subcommand(
      "pin", "pin PCs (by MAC) to a channel, to one version, or back to following the channel");
  pin->add_option("macs", opt.macs, "MAC addresses")->required();
  pin->add_option("--channel", opt.channel, "the channel they follow");
  auto* version = pin->add_option("--version", opt.version, "the one image version they boot");
  pin->add_flag("--follow", opt.follow, "boot the channel's current image again (no version)")
      ->excludes(version);
  pin->callback(withSession([show, owned](const Session& s) {
    const Args& args = *owned;
    Json body{{"macs", args.macs}};
    if (!args.channel.empty())
      body["channel"] = args.channel;
    if (!args.version.empty())
      body["version"] = args.version;
    else if (args.follow)
      body["version"] = nullptr;
    return show(call(s, "POST", "/api/v1/boot-hosts/pin", body),
                {"mac", "channel", "image_version"});
  }));

  auto* del = images->add_subcommand(
      "delete", "delete an image no channel has as current and no PC is pinned to");
  del->add_option("version", opt.version, "the image's version")->required();
  del->add_option("--flavour", opt.flavour, "thin (default) or workstation");
  del->callback(withSession([show, owned](const Session& s) {
    const Args& args = *owned;
    return show(call(s, "DELETE",
                     fmt::format("/api/v1/images/{}/{}", http::urlEncode(args.flavour),
                                 http::urlEncode(args.version)),
                     std::nullopt),
                {});
  }));
}

}  // namespace aula::ctl::detail
