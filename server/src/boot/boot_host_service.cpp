// Boot hosts: MAC addresses and what they network-boot.
#include "aula/broker/boot_host_service.hpp"

#include "aula/broker/image_service.hpp"
#include "aula/common/log.hpp"

#include "boot/grub_script.hpp"
#include "boot/ipxe_script.hpp"
#include "core/policy.hpp"

namespace aula::broker {

using namespace detail;

Result<Json> BootHostService::list(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    // Columns of the query below, in its order.
    enum BootHostCol : std::size_t {
      kMac,
      kKind,
      kChannel,
      kHostname,
      kHostId,
      kFirstSeen,
      kLastSeen,
      kImageVersion
    };
    auto rows =
        AULA_TRY(tx.query("SELECT mac, kind, channel, hostname, host_id, first_seen, last_seen, "
                          "image_version FROM boot_hosts ORDER BY mac"));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"mac", r.text(kMac)},
                     {"kind", r.text(kKind)},
                     {"channel", r.text(kChannel)},
                     {"hostname", r.text(kHostname)},
                     {"host_id", nullableInt(r, kHostId)},
                     {"first_seen", r.integer(kFirstSeen)},
                     {"last_seen", nullableInt(r, kLastSeen)},
                     {"image_version", nullableText(r, kImageVersion)}});
    }
    return out;
  });
}

Result<Json> BootHostService::put(const Actor& actor, std::string_view macText, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto mac = AULA_TRY(normalizeMac(macText));
  AULA_TRY_STATUS(json::checkFields(body, {"kind", "channel", "hostname", "host_id"}));
  auto kind = AULA_TRY(json::getString(body, "kind"));
  if (kind != "thin_client" && kind != "workstation" && kind != "unknown") {
    return Error(Errc::kInvalidArgument,
                 "The field 'kind' must be 'thin_client', 'workstation' or 'unknown'.");
  }
  auto channel = AULA_TRY(optString(body, "channel")).value_or("stable");
  AULA_TRY_STATUS(checkChannel(channel));
  auto hostname = AULA_TRY(optString(body, "hostname")).value_or("");
  if (!hostname.empty())
    AULA_TRY_STATUS(checkHostName(hostname));
  auto hostId = AULA_TRY(optInt(body, "host_id"));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    if (hostId)
      AULA_TRY(tx.queryOne("SELECT id FROM hosts WHERE id = ?", {*hostId},
                           fmt::format("There is no host with id {}.", *hostId)));
    auto existing = AULA_TRY(tx.query(
        "SELECT first_seen, last_seen, kind, image_version FROM boot_hosts WHERE mac = ?", {mac}));
    std::int64_t firstSeen = existing.empty() ? now : existing[0].integer(0);
    // A pin to a version stays while the PC keeps its flavour.
    db::Value pinned;
    if (!existing.empty() && existing[0].text(2) == kind)
      pinned = existing[0].at(3);
    AULA_TRY(tx.exec("DELETE FROM boot_hosts WHERE mac = ?", {mac}));
    AULA_TRY(
        tx.exec("INSERT INTO boot_hosts (mac, kind, channel, hostname, host_id, first_seen, "
                "last_seen, image_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                {mac, kind, channel, hostname, intOrNull(hostId), firstSeen,
                 existing.empty() ? db::Value() : existing[0].at(1), pinned}));
    AULA_TRY_STATUS(audit(tx, actor, now, "boot_host.set", fmt::format("mac:{}", mac), body));
    return Json{{"mac", mac},
                {"kind", kind},
                {"channel", channel},
                {"hostname", hostname},
                {"host_id", hostId ? Json(*hostId) : Json()},
                {"first_seen", firstSeen}};
  });
}

Status BootHostService::remove(const Actor& actor, std::string_view macText) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto mac = AULA_TRY(normalizeMac(macText));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto n = AULA_TRY(tx.exec("DELETE FROM boot_hosts WHERE mac = ?", {mac}));
    if (n == 0)
      return makeError(Errc::kNotFound, "There is no boot host with MAC {}.", mac);
    return audit(tx, actor, now, "boot_host.delete", fmt::format("mac:{}", mac));
  });
}

BootRequest bootRequestFrom(const std::map<std::string, std::string>& query, std::string host) {
  auto arg = [&query](const char* name) {
    auto it = query.find(name);
    return it == query.end() ? std::string() : it->second;
  };
  return {.hasMac = query.contains("mac"),
          .mac = arg("mac"),
          .ip = arg("ip"),
          .platform = arg("platform"),
          .buildarch = arg("buildarch"),
          .host = std::move(host)};
}

void logBootAnswer(const BootRequest& request, const BootAnswer& answer, std::string_view peer,
                   std::string_view loader) {
  std::string_view outcome = answer.outcome;
  if (outcome.ends_with('.'))
    outcome.remove_suffix(1);  // the log line ends with its own
  log::info("Boot: {} ({}, {} {}) from {}{}{}: {}.", request.mac.substr(0, 40),
            request.ip.substr(0, 40), request.platform.substr(0, 20),
            request.buildarch.substr(0, 20), peer, loader.empty() ? "" : " by ", loader, outcome);
}

namespace {

// Which image flavour a boot record's kind boots.
std::string_view flavourOf(std::string_view kind) {
  return kind == "workstation" ? "workstation" : "thin";
}

}  // namespace

std::string BootHostService::brokerUrl(const BootRequest& request) const {
  const auto& configured = ctx_.settings.boot.brokerUrl;
  if (!configured.empty())
    return configured;
  // The name or address the PC used for this request, with HTTPS's port.
  std::string host = request.host;
  if (host.starts_with('[')) {
    host = host.substr(0, host.find(']') + 1);
  } else if (auto colon = host.find(':'); colon != std::string::npos) {
    host.resize(colon);
  }
  const bool safe = !host.empty() && host.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789.-[]:") == std::string::npos;
  if (!safe || httpsPort_ == 0)
    return {};
  return fmt::format("https://{}:{}", host, httpsPort_.load());
}

BootHostService::Plan BootHostService::plan(const BootRequest& request) {
  auto menu = [](std::string reason) {
    Plan p{.kind = Plan::kMenu, .reason = std::move(reason)};
    p.outcome = "menu: " + p.reason;
    return p;
  };
  if (!request.hasMac)
    return {.kind = Plan::kAskAgain, .outcome = "asked for its settings"};
  auto mac = normalizeMac(request.mac);
  if (!mac) {
    return menu(fmt::format("This PC sent '{}' as its MAC address, which is not one.",
                            ipxe::safeText(request.mac, 40)));
  }
  // Debian's kernels are x86-64: BIOS iPXE is an i386 build on the same
  // CPUs, UEFI must be the x86-64 one.
  const bool bios = request.platform == "pcbios" &&
                    (request.buildarch == "i386" || request.buildarch == "x86_64");
  const bool uefi = request.platform == "efi" && request.buildarch == "x86_64";
  if (!bios && !uefi) {
    return menu(fmt::format(
        "This PC's firmware ({} {}) cannot start Aula's images, which need a 64-bit PC with "
        "BIOS or UEFI firmware.",
        request.platform.empty() ? "unknown" : ipxe::safeText(request.platform, 20),
        ipxe::safeText(request.buildarch, 20)));
  }
  const auto& boot = ctx_.settings.boot;
  const std::string url = brokerUrl(request);
  if (url.empty()) {
    return menu(
        "The Aula server does not know the address PCs reach it at: set boot.broker_url in its "
        "configuration.");
  }
  const auto now = unixNow(ctx_.clock);
  struct Decision {
    bool local = false;
    std::optional<BootImage> image;
    std::string reason;
  };
  auto decided = ctx_.db.transactValue<Decision>(
      db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Decision> {
        auto rows = AULA_TRY(
            tx.query("SELECT kind, channel, image_version FROM boot_hosts WHERE mac = ?", {*mac}));
        std::string kind = "unknown";
        std::string channel = boot.unknownChannel;
        std::optional<std::string> pinned;
        if (rows.empty()) {
          // Recorded for the admin to adopt, up to a limit a flood of made-up
          // MACs cannot push the table past.
          const auto known =
              AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM boot_hosts WHERE kind = 'unknown'"));
          if (known < boot.maxUnknown) {
            AULA_TRY(tx.exec(
                "INSERT INTO boot_hosts (mac, kind, channel, first_seen, last_seen) VALUES (?, "
                "'unknown', ?, ?, ?)",
                {*mac, boot.unknownChannel, now, now}));
          }
        } else {
          kind = rows[0].text(0);
          channel = rows[0].text(1);
          pinned = rows[0].optText(2);
          AULA_TRY(tx.exec("UPDATE boot_hosts SET last_seen = ? WHERE mac = ?", {now, *mac}));
        }
        Decision d;
        if (kind == "unknown") {
          if (boot.unknown == "local") {
            d.local = true;
            return d;
          }
          if (boot.unknown == "menu") {
            d.reason = fmt::format(
                "This PC is not registered with Aula yet. An admin adopts it with 'aulactl "
                "boot-hosts set {} --kind thin_client'.",
                *mac);
            return d;
          }
          pinned.reset();  // an unknown PC boots the site's choice only
        }
        auto image = ImageService::resolve(tx, flavourOf(kind), channel, pinned);
        if (!image) {
          if (image.error().code() != Errc::kNotFound)
            return image.error();
          d.reason = image.error().message();
          return d;
        }
        d.image = *image;
        return d;
      });
  if (!decided) {
    log::warn("A boot request from {} could not be answered: {}", *mac, decided.error().message());
    return menu("The Aula server could not look this PC up just now; it will try again.");
  }
  if (decided->local)
    return {.kind = Plan::kLocal, .outcome = "local disk (unknown PC)"};
  if (!decided->image)
    return menu(decided->reason);
  Plan p{.kind = Plan::kImage, .image = *decided->image};
  p.cmdline = fmt::format("aula.broker={} aula.ca_fp={} aula.image={}/{}", url, boot.caFingerprint,
                          p.image.flavour, p.image.version);
  if (!boot.kernelArgs.empty())
    p.cmdline += " " + boot.kernelArgs;
  const std::string from = p.image.channel.empty() ? "pinned" : "channel " + p.image.channel;
  p.title =
      fmt::format("Aula: starting the {} image {} ({})...", p.image.flavour, p.image.version, from);
  p.outcome = fmt::format("{} {} ({})", p.image.flavour, p.image.version, from);
  return p;
}

BootAnswer BootHostService::ipxe(const BootRequest& request) {
  const std::string origin = ipxe::originOf(request.host);
  Plan p = plan(request);
  switch (p.kind) {
    case Plan::kAskAgain:
      return {ipxe::chainScript(origin), std::move(p.outcome)};
    case Plan::kMenu:
      return {ipxe::menuScript(origin, p.reason), std::move(p.outcome)};
    case Plan::kLocal:
      return {ipxe::localScript(), std::move(p.outcome)};
    case Plan::kImage:
      break;
  }
  return {ipxe::imageScript(
              origin, fmt::format("{}/boot/images/{}/{}", origin, p.image.flavour, p.image.version),
              p.cmdline, p.title),
          std::move(p.outcome)};
}

BootAnswer BootHostService::grub(const BootRequest& request) {
  Plan p = plan(request);
  switch (p.kind) {
    case Plan::kAskAgain:
      return {grub::bootstrapScript(), std::move(p.outcome)};
    case Plan::kMenu:
      return {grub::menuScript(p.reason), std::move(p.outcome)};
    case Plan::kLocal:
      return {grub::localScript(), std::move(p.outcome)};
    case Plan::kImage:
      break;
  }
  return {grub::imageScript(fmt::format("/boot/images/{}/{}", p.image.flavour, p.image.version),
                            p.cmdline, p.title),
          std::move(p.outcome)};
}

}  // namespace aula::broker
