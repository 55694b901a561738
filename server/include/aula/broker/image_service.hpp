// Network-boot images and their releases. An image is one build of a
// flavour (image/build.sh: thin or workstation) at one version; the broker
// keeps its files under boot.image_dir and serves them to PCs booting from
// the network. Channels ("stable", "testing", a site's own) each have a
// current image per flavour; a boot host follows its channel unless it is
// pinned to a version. Every change is an admin's, audited.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "aula/broker/context.hpp"

namespace aula::broker {

// The files an image is made of, in the order a PC fetches them.
inline constexpr std::string_view kImageFiles[] = {"vmlinuz", "initrd.img"};

// One image a PC is to boot.
struct BootImage {
  std::string flavour;
  std::string version;
  std::string channel;  // the channel it came from; empty when pinned
};

class ImageService {
 public:
  explicit ImageService(BrokerContext& ctx) : ctx_(ctx) {}

  // Uploads, one chunk at a time, so no request holds a whole image: a
  // chunk at `offset` 0 starts the file over, any other offset must be the
  // bytes already received (kConflict says how many). Nothing is visible
  // until add() checks the files against their manifest.
  Result<Json> upload(const Actor& actor, std::string_view flavour, std::string_view version,
                      std::string_view file, std::uint64_t offset, std::string_view bytes);
  // Adds the uploaded image described by `manifest` (image/build.sh's
  // manifest.json): each file's size and SHA-256 must match, then the files
  // move into place and the image is listed. It is on no channel yet.
  Result<Json> add(const Actor& actor, const Json& manifest);
  Result<Json> list(const Actor& actor);
  // Deletes an image that no channel has as current and no PC is pinned to.
  Status remove(const Actor& actor, std::string_view flavour, std::string_view version);

  // Channels with their current image per flavour and the one before it.
  Result<Json> channels(const Actor& actor);
  // Makes the image (body: flavour, version) current on the channel.
  Result<Json> promote(const Actor& actor, std::string_view channel, const Json& body);
  // Withdraws the channel's current image (body: flavour); the one before it
  // is current again. kConflict when there is none before it.
  Result<Json> rollback(const Actor& actor, std::string_view channel, const Json& body);
  // Pins PCs (body: macs, and channel, or version, or both) in one change;
  // "version": null makes them follow their channel again.
  Result<Json> pin(const Actor& actor, const Json& body);

  // What a PC with this boot record boots, or kNotFound with the sentence
  // its menu shows. Read in the caller's transaction.
  static Result<BootImage> resolve(db::Transaction& tx, std::string_view flavour,
                                   std::string_view channel,
                                   const std::optional<std::string>& pinnedVersion);
  // An image's file on disk and its SHA-256 (the ETag), for serving; kNotFound
  // for an image that is not listed or a file that is not one of its files.
  struct ServedFile {
    std::filesystem::path path;
    std::string sha256;
  };
  Result<ServedFile> servedFile(std::string_view flavour, std::string_view version,
                                std::string_view file);

 private:
  Result<std::filesystem::path> imageDir() const;

  BrokerContext& ctx_;
};

// Names that go into paths, URLs and iPXE scripts: checked strictly.
Status checkFlavour(std::string_view flavour);
Status checkImageVersion(std::string_view version);
Status checkChannel(std::string_view channel);

}  // namespace aula::broker
