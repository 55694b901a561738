// Network boot on a whole broker: images uploaded with aulactl and checked
// against their manifest, served on the plain-HTTP boot listener with
// ranges and validators, and the iPXE script each PC gets by its boot
// record: kind, channel, pin, rollback, unknown PCs, and every malformed
// request answered with the menu instead of an error. The Secure Boot path
// over the broker's TFTP: signed loaders, GRUB's bootstrap and each PC's
// GRUB script, and the image's files.
#include <chrono>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/common/crypto.hpp"
#include "aula/common/http_client.hpp"
#include "aula/common/process.hpp"

#include "support/broker_fixture.hpp"
#include "support/temp_dir.hpp"
#include "support/tftp_client.hpp"

namespace aula::test {
namespace {

using json::Json;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
namespace fs = std::filesystem;

// Bytes that differ from their neighbours, different per seed.
std::string patterned(std::size_t size, int seed) {
  std::string data(size, '\0');
  for (std::size_t i = 0; i < size; ++i)
    data[i] = static_cast<char>((i * 13 + i / 509 + static_cast<std::size_t>(seed) * 71) & 0xff);
  return data;
}

// What image/build.sh leaves for one flavour: kernel, initramfs, manifest.
fs::path makeImageDir(const fs::path& parent, const std::string& flavour,
                      const std::string& version, int seed) {
  fs::path dir = parent / (flavour + "-" + version);
  fs::create_directories(dir);
  Json artefacts = Json::array();
  for (auto [name, size] : {std::pair<std::string, std::size_t>{"vmlinuz", 300 * 1024 + 7},
                            {"initrd.img", 1300 * 1024 + 3}}) {
    const std::string data = patterned(size, seed + static_cast<int>(name.size()));
    writeFile(dir / name, data);
    artefacts.push_back(
        {{"file", name}, {"bytes", data.size()}, {"sha256", crypto::sha256Hex(data)}});
  }
  writeFile(dir / "manifest.json",
            Json{{"flavour", flavour}, {"version", version}, {"artefacts", artefacts}}.dump(2));
  return dir;
}

class BrokerBootTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }

  void start(std::vector<std::pair<std::string, std::string>> settings) {
    broker_.reset();
    settings.emplace_back("boot.listen", "127.0.0.1:0");
    broker_ = std::make_unique<BrokerFixture>(BrokerOptions{.settings = settings});
    bootUrl_ = "http://" + broker_->server().bootAddress();
  }

  process::Outcome aulactl(std::vector<std::string> args) {
    return broker_->runAulactl(AULA_AULACTL_BIN, std::move(args), broker_->adminToken(),
                               dir_.path());
  }

  // A plain-HTTP GET on the boot listener, as a PC's firmware sends it.
  http::Response boot(const std::string& target,
                      std::vector<std::pair<std::string, std::string>> headers = {}) {
    http::Client client;
    auto r = client.send({.url = bootUrl_ + target, .headers = std::move(headers)});
    if (!r)
      throw std::runtime_error(r.error().message());
    return *r;
  }

  // The script a PC with this MAC gets from BIOS iPXE.
  std::string scriptFor(const std::string& mac, const std::string& platform = "pcbios",
                        const std::string& arch = "i386") {
    auto r = boot(fmt::format("/boot/ipxe?mac={}&ip=10.0.2.15&platform={}&buildarch={}", mac,
                              platform, arch));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_THAT(r.body, StartsWith("#!ipxe\n"));
    return r.body;
  }

  void addImage(const std::string& version, int seed) {
    auto added = aulactl({"images", "add", makeImageDir(dir_.path(), "thin", version, seed)});
    ASSERT_EQ(added.exitCode, 0) << added.err << added.out;
  }

  Json admin(std::string_view method, const std::string& path, const std::optional<Json>& body,
             long expected) {
    return broker_->adminCall(method, path, body, expected);
  }

  TempDir dir_;
  std::unique_ptr<BrokerFixture> broker_;
  std::string bootUrl_;
};

// The image a script boots, from its kernel line: "thin/VERSION", or "" for
// the menu.
std::string bootsImage(const std::string& script) {
  const auto kernel = script.find("\nkernel ");
  const auto at = script.find("/boot/images/", kernel);
  if (kernel == std::string::npos || at == std::string::npos)
    return "";
  const auto from = at + std::string_view("/boot/images/").size();
  return script.substr(from, script.find("/vmlinuz", from) - from);
}

bool isMenu(const std::string& script) {
  return script.find("menu Aula could not start this PC") != std::string::npos &&
         script.find("item --default aula_retry Try again") != std::string::npos &&
         script.find("item aula_local Start from the local disk") != std::string::npos &&
         bootsImage(script).empty();
}

TEST_F(BrokerBootTest, AulactlAddsAnImageThatTheBootListenerServesWithRangesAndValidators) {
  const fs::path dir = makeImageDir(dir_.path(), "thin", "20261207-0123456789ab", 1);
  auto added = aulactl({"images", "add", dir.string()});
  ASSERT_EQ(added.exitCode, 0) << added.err << added.out;
  EXPECT_THAT(added.out, HasSubstr("Added the thin image 20261207-0123456789ab"));
  EXPECT_THAT(added.err, HasSubstr("Uploading initrd.img (1.3 MiB)... done."));

  auto list = admin("GET", "/api/v1/images", std::nullopt, 200);
  ASSERT_EQ(list.size(), 1U);
  EXPECT_EQ(list[0]["version"], "20261207-0123456789ab");
  EXPECT_EQ(list[0]["bytes"], (300 * 1024 + 7) + (1300 * 1024 + 3));
  EXPECT_EQ(list[0]["added_by"], "admin");
  EXPECT_EQ(list[0]["channels"], Json::array());

  const std::string initrd = readFile(dir / "initrd.img");
  const std::string url = "/boot/images/thin/20261207-0123456789ab/initrd.img";
  auto whole = boot(url);
  ASSERT_EQ(whole.status, 200) << whole.body;
  EXPECT_TRUE(whole.body == initrd) << "the served initramfs differs from the uploaded one";
  EXPECT_EQ(whole.header("etag"), fmt::format("\"sha256-{}\"", crypto::sha256Hex(initrd)));
  EXPECT_EQ(whole.header("cache-control"), "public, max-age=31536000, immutable");
  EXPECT_EQ(whole.header("accept-ranges"), "bytes");

  auto part = boot(url, {{"Range", "bytes=1000000-"}});
  EXPECT_EQ(part.status, 206);
  EXPECT_TRUE(part.body == initrd.substr(1000000));
  auto cached = boot(url, {{"If-None-Match", whole.header("etag")}});
  EXPECT_EQ(cached.status, 304);

  // Only /boot/ is on plain HTTP; the API is not, and neither is a file
  // that is not an image's or a version nobody added.
  auto api = boot("/api/v1/images");
  EXPECT_EQ(api.status, 404);
  EXPECT_THAT(api.body, HasSubstr("the API is on HTTPS"));
  EXPECT_EQ(boot("/boot/images/thin/20261207-0123456789ab/manifest.json").status, 404);
  EXPECT_EQ(boot("/boot/images/thin/20261207-000000000000/initrd.img").status, 404);
  // A path that climbs out is refused by the request parser itself.
  EXPECT_EQ(boot("/boot/images/thin/..%2F..%2Faula.db/initrd.img").status, 400);
  EXPECT_EQ(boot("/boot/images/thin/20261207-0123456789ab/initrd.img.bak").status, 404);
  EXPECT_EQ(boot("/boot/images/thin/20261207-0123456789ab/vmlinuz").body,
            readFile(dir / "vmlinuz"));

  // The same version twice is refused; the one listed stays as it was.
  auto again = aulactl({"images", "add", dir.string()});
  EXPECT_NE(again.exitCode, 0);
  EXPECT_THAT(again.err, HasSubstr("already on this broker"));
  EXPECT_EQ(boot(url).body.size(), initrd.size());
}

TEST_F(BrokerBootTest, ABrokenUploadIsRefusedAndListsNothing) {
  const fs::path dir = makeImageDir(dir_.path(), "thin", "v-broken", 2);
  // A file changed after the build: aulactl says so before sending it.
  writeFile(dir / "vmlinuz", patterned(1000, 9));
  auto damaged = aulactl({"images", "add", dir.string()});
  EXPECT_EQ(damaged.exitCode, 2);
  EXPECT_THAT(damaged.err, HasSubstr("does not match its manifest's SHA-256"));

  // Over the API: a chunk at the wrong offset names the right one, and
  // a manifest whose hash the uploaded bytes do not have adds nothing.
  auto& api = broker_->api();
  auto put = [&](std::uint64_t offset, const std::string& bytes) {
    http::Request r{
        .method = "PUT",
        .url = fmt::format("/api/v1/images/thin/v-broken/files/vmlinuz?offset={}", offset),
        .headers = {{"Content-Type", "application/octet-stream"}},
        .body = bytes};
    return api.send(r, broker_->adminToken());
  };
  EXPECT_EQ(put(0, "abcd").status, 200);
  auto gap = put(10, "efgh");
  EXPECT_EQ(gap.status, 409);
  EXPECT_EQ(gap.errorMessage(),
            "The upload of vmlinuz has 4 bytes; send the next chunk from offset 4 (or from 0 to "
            "start over).");
  EXPECT_EQ(put(4, "efgh").status, 200);
  http::Request initrd{.method = "PUT",
                       .url = "/api/v1/images/thin/v-broken/files/initrd.img?offset=0",
                       .headers = {{"Content-Type", "application/octet-stream"}},
                       .body = "initrd"};
  EXPECT_EQ(api.send(initrd, broker_->adminToken()).status, 200);
  Json manifest{
      {"flavour", "thin"},
      {"version", "v-broken"},
      {"artefacts",
       {{{"file", "vmlinuz"}, {"bytes", 8}, {"sha256", crypto::sha256Hex("abcdefgX")}},
        {{"file", "initrd.img"}, {"bytes", 6}, {"sha256", crypto::sha256Hex("initrd")}}}}};
  auto add = api.call("POST", "/api/v1/images", broker_->adminToken(), manifest);
  EXPECT_EQ(add.status, 409) << add.describe();
  EXPECT_THAT(add.errorMessage(), HasSubstr("'vmlinuz' does not match the manifest's SHA-256"));
  EXPECT_EQ(admin("GET", "/api/v1/images", std::nullopt, 200).size(), 0U);

  // Bad names never reach the disk.
  http::Request sneaky{.method = "PUT",
                       .url = "/api/v1/images/thin/v1/files/broker.toml?offset=0",
                       .headers = {{"Content-Type", "application/octet-stream"}},
                       .body = "x"};
  auto refused = api.send(sneaky, broker_->adminToken());
  EXPECT_EQ(refused.status, 400) << refused.describe();
  EXPECT_THAT(refused.errorMessage(), HasSubstr("is not a file of an image"));
  // A student may not upload at all.
  broker_->seed();
  EXPECT_EQ(api.send(initrd, broker_->tokenOf("alice")).status, 403);
}

TEST_F(BrokerBootTest, EachPcBootsItsChannelsImageOrItsPinAndARollbackGoesBack) {
  const std::string lab = "52:54:00:aa:00:01";
  const std::string desk = "52:54:00:aa:00:02";
  const std::string ws = "52:54:00:aa:00:03";
  admin("PUT", "/api/v1/boot-hosts/" + lab, Json{{"kind", "thin_client"}}, 200);
  admin("PUT", "/api/v1/boot-hosts/" + desk, Json{{"kind", "thin_client"}}, 200);
  admin("PUT", "/api/v1/boot-hosts/" + ws, Json{{"kind", "workstation"}}, 200);

  // Nothing released yet: the menu says what an admin does about it.
  std::string script = scriptFor(lab);
  EXPECT_TRUE(isMenu(script)) << script;
  EXPECT_THAT(script, HasSubstr("No thin image is released on the channel 'stable'"));

  ASSERT_NO_FATAL_FAILURE(addImage("v1", 1));
  ASSERT_NO_FATAL_FAILURE(addImage("v2", 2));
  auto promote = aulactl({"images", "promote", "v1", "--channel", "stable"});
  ASSERT_EQ(promote.exitCode, 0) << promote.err;
  script = scriptFor(lab);
  EXPECT_EQ(bootsImage(script), "thin/v1") << script;
  // The kernel gets the broker's HTTPS URL (the host the PC asked, with the
  // HTTPS port) and its CA's fingerprint, and the script falls back to the
  // menu when a download fails.
  EXPECT_THAT(script, HasSubstr(fmt::format("aula.broker={} ", broker_->baseUrl())));
  EXPECT_THAT(script, HasSubstr(fmt::format("aula.ca_fp={} ", broker_->server().caFingerprint())));
  // Every URL is absolute, on the listener the PC asked.
  EXPECT_THAT(script, HasSubstr(fmt::format(
                          "kernel {}/boot/images/thin/v1/vmlinuz initrd=initrd.img ", bootUrl_)));
  EXPECT_THAT(script, HasSubstr(fmt::format(
                          "initrd --name initrd.img {}/boot/images/thin/v1/initrd.img", bootUrl_)));
  EXPECT_THAT(script, HasSubstr("boot || goto aula_failed"));
  EXPECT_THAT(script, HasSubstr("menu Aula could not start this PC"));

  ASSERT_EQ(aulactl({"images", "promote", "v2", "--channel", "stable"}).exitCode, 0);
  EXPECT_EQ(bootsImage(scriptFor(lab)), "thin/v2");
  // Promoting the current image again says so and changes nothing.
  auto twice = aulactl({"images", "promote", "v2", "--channel", "stable"});
  EXPECT_NE(twice.exitCode, 0);
  EXPECT_THAT(twice.err, HasSubstr("already current"));
  auto channels = admin("GET", "/api/v1/image-channels", std::nullopt, 200);
  ASSERT_EQ(channels.size(), 1U);
  EXPECT_EQ(channels[0]["version"], "v2");
  EXPECT_EQ(channels[0]["previous"], "v1");

  // A pin to a version holds whatever the channel does; --follow lets go.
  ASSERT_EQ(aulactl({"images", "pin", desk, "--version", "v1"}).exitCode, 0);
  EXPECT_EQ(bootsImage(scriptFor(desk)), "thin/v1");
  EXPECT_EQ(bootsImage(scriptFor(lab)), "thin/v2");
  // An image a PC is pinned to, or a channel's current one, is not deleted.
  auto pinned = aulactl({"images", "delete", "v1"});
  EXPECT_NE(pinned.exitCode, 0);
  EXPECT_THAT(pinned.err, HasSubstr("1 PC(s) are pinned"));
  auto current = aulactl({"images", "delete", "v2"});
  EXPECT_NE(current.exitCode, 0);
  EXPECT_THAT(current.err, HasSubstr("current on the channel 'stable'"));

  // Rollback: the channel goes back to v1; the pinned PC keeps v1 too.
  auto rollback = aulactl({"images", "rollback", "stable"});
  ASSERT_EQ(rollback.exitCode, 0) << rollback.err;
  EXPECT_EQ(bootsImage(scriptFor(lab)), "thin/v1");
  auto only = aulactl({"images", "rollback", "stable"});
  EXPECT_NE(only.exitCode, 0);
  EXPECT_THAT(only.err, HasSubstr("none to go back to"));
  EXPECT_EQ(bootsImage(scriptFor(lab)), "thin/v1") << "a refused rollback changes nothing";

  // A group of PCs onto the testing channel in one change, following it.
  ASSERT_EQ(aulactl({"images", "pin", lab, desk, "--channel", "testing", "--follow"}).exitCode, 0);
  EXPECT_THAT(scriptFor(lab), HasSubstr("No thin image is released on the channel 'testing'"));
  ASSERT_EQ(aulactl({"images", "promote", "v2", "--channel", "testing"}).exitCode, 0);
  EXPECT_EQ(bootsImage(scriptFor(lab)), "thin/v2");
  EXPECT_EQ(bootsImage(scriptFor(desk)), "thin/v2");
  // The workstation flavour is its own: none added, so the menu.
  EXPECT_THAT(scriptFor(ws), HasSubstr("No workstation image is released"));
  // A PC that is not known cannot be pinned, and nothing of the group moves.
  auto stranger = aulactl({"images", "pin", lab, "52:54:00:ff:ff:ff", "--channel", "stable"});
  EXPECT_NE(stranger.exitCode, 0);
  EXPECT_THAT(stranger.err, HasSubstr("There is no boot host with MAC 52:54:00:ff:ff:ff"));
  EXPECT_EQ(bootsImage(scriptFor(lab)), "thin/v2");

  auto listed = aulactl({"--json", "images", "list"});
  ASSERT_EQ(listed.exitCode, 0);
  auto images = Json::parse(listed.out);
  ASSERT_EQ(images.size(), 2U);
  // Every change is in the audit log.
  auto audit = admin("GET", "/api/v1/audit?action=image.", std::nullopt, 200);
  EXPECT_GE(audit.size(), 6U) << audit.dump();
}

TEST_F(BrokerBootTest, AnUnknownPcIsRecordedAndBootsTheSitesChoice) {
  ASSERT_NO_FATAL_FAILURE(addImage("v1", 1));
  ASSERT_EQ(aulactl({"images", "promote", "v1", "--channel", "stable"}).exitCode, 0);
  // By default an unknown PC boots the stable thin image: it holds no secret.
  EXPECT_EQ(bootsImage(scriptFor("52-54-00-BB-00-01")), "thin/v1");
  auto hosts = admin("GET", "/api/v1/boot-hosts", std::nullopt, 200);
  ASSERT_EQ(hosts.size(), 1U);
  EXPECT_EQ(hosts[0]["mac"], "52:54:00:bb:00:01");
  EXPECT_EQ(hosts[0]["kind"], "unknown");
  EXPECT_GT(hosts[0]["first_seen"].get<std::int64_t>(), 0);
  EXPECT_EQ(hosts[0]["last_seen"], hosts[0]["first_seen"]);
  // The admin adopts it; its first sighting stays.
  auto adopted = admin("PUT", "/api/v1/boot-hosts/52:54:00:bb:00:01",
                       Json{{"kind", "thin_client"}, {"hostname", "lab1-pc01"}}, 200);
  EXPECT_EQ(adopted["first_seen"], hosts[0]["first_seen"]);

  // A site that wants unknown PCs to wait for an admin shows them the menu
  // with the command that adopts them; another sends them to their disk.
  start({{"boot.unknown", "menu"}});
  std::string script = scriptFor("52:54:00:bb:00:02");
  EXPECT_TRUE(isMenu(script)) << script;
  EXPECT_THAT(script, HasSubstr("aulactl boot-hosts set 52:54:00:bb:00:02 --kind thin_client"));
  start({{"boot.unknown", "local"}});
  script = scriptFor("52:54:00:bb:00:03");
  EXPECT_THAT(script, HasSubstr("\nexit 1\n"));
  EXPECT_EQ(bootsImage(script), "");
}

TEST_F(BrokerBootTest, AMalformedRequestGetsTheMenuNeverAnError) {
  // DHCP's boot file name is a plain URL: the answer asks again with iPXE's
  // own settings.
  auto first = boot("/boot/ipxe");
  EXPECT_EQ(first.status, 200);
  EXPECT_THAT(first.body,
              HasSubstr(fmt::format("chain --replace --autofree {}/boot/ipxe?mac=${{netX/mac}}&",
                                    bootUrl_)));
  EXPECT_EQ(first.header("cache-control"), "no-store");
  // A Host header iPXE could misread is not copied into the script.
  auto odd = boot("/boot/ipxe", {{"Host", "x${net0/ip}"}});
  EXPECT_THAT(odd.body, HasSubstr("chain --replace --autofree /boot/ipxe?mac=${netX/mac}&"));
  EXPECT_THAT(odd.body, Not(HasSubstr("x${net0/ip}")));

  struct Case {
    std::string query;
    std::string says;
  };
  for (const auto& c : std::vector<Case>{
           {"mac=zz:zz&platform=pcbios&buildarch=i386", "sent 'zz:zz' as its MAC address"},
           {"mac=&platform=pcbios&buildarch=i386", "sent '' as its MAC address"},
           {"mac=52:54:00:cc:00:01&platform=efi&buildarch=arm64",
            "firmware (efi arm64) cannot start Aula's images"},
           {"mac=52:54:00:cc:00:01&platform=efi&buildarch=i386", "(efi i386)"},
           {"mac=52:54:00:cc:00:01", "firmware (unknown )"},
           {"mac=%24%7Bnet0%2Fmac%7D&platform=pcbios&buildarch=i386", "sent 'S{net0/mac}'"},
       }) {
    auto r = boot("/boot/ipxe?" + c.query);
    EXPECT_EQ(r.status, 200) << c.query;
    EXPECT_TRUE(isMenu(r.body)) << c.query << "\n" << r.body;
    EXPECT_THAT(r.body, HasSubstr(c.says)) << c.query;
  }
  // None of them was recorded as a PC.
  EXPECT_EQ(admin("GET", "/api/v1/boot-hosts", std::nullopt, 200).size(), 0U);
}

// GRUB's scripts and the files a Secure Boot PC fetches, over the broker's
// TFTP listener the way Debian's signed GRUB asks for them.
TEST_F(BrokerBootTest, SecureBootPcsGetGrubScriptsAndTheImageOverTftp) {
  const fs::path loaders = dir_.path() / "loaders";
  fs::create_directories(loaders);
  writeFile(loaders / "shimx64.efi", patterned(70 * 1024 + 1, 5));
  writeFile(loaders / "grubx64.efi", patterned(90 * 1024, 6));
  start({{"boot.tftp_listen", "127.0.0.1:0"}, {"boot.loaders_dir", loaders.string()}});
  const std::string address = broker_->server().tftpAddress();
  ASSERT_FALSE(address.empty());
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  auto get = [port](const std::string& name, std::optional<std::size_t> blockSize = 1468) {
    return tftpGet("127.0.0.1", port, name, {.blockSize = blockSize, .timeoutMs = 20000});
  };

  // The loaders as the PC's firmware and shim ask for them.
  auto shim = get("shimx64.efi", std::nullopt);
  ASSERT_TRUE(shim.ok) << shim.errorText;
  EXPECT_EQ(shim.data, patterned(70 * 1024 + 1, 5));
  EXPECT_TRUE(get("/grubx64.efi").ok);
  auto mok = get("mmx64.efi");
  EXPECT_EQ(mok.errorCode, 1);
  EXPECT_EQ(mok.errorText, "mmx64.efi is not on this Aula server.");
  EXPECT_EQ(get("../etc/passwd").errorCode, 1);

  // GRUB's own configuration asks for the PC's script with its settings.
  for (const char* path : {"/grub/grub.cfg", "/grub/x86_64-efi/grub.cfg"}) {
    auto bootstrap = get(path);
    ASSERT_TRUE(bootstrap.ok) << path << ": " << bootstrap.errorText;
    EXPECT_THAT(bootstrap.data,
                HasSubstr("set aula_self=\"/boot/grub?mac=${net_default_mac}&ip=${net_default_ip}&"
                          "platform=${grub_platform}&buildarch=${grub_cpu}\"\n"));
    EXPECT_THAT(bootstrap.data, HasSubstr("source \"$aula_self\"\n"));
    // A server that does not answer leaves the PC a menu, not a prompt.
    EXPECT_THAT(bootstrap.data, HasSubstr("The Aula server did not answer"));
  }

  const std::string pc = "52:54:00:dd:00:01";
  auto scriptFor = [&](const std::string& mac) {
    auto r = get(fmt::format("/boot/grub?mac={}&ip=10.0.2.15&platform=efi&buildarch=x86_64", mac));
    EXPECT_TRUE(r.ok) << r.errorText;
    return r.data;
  };
  auto isGrubMenu = [](const std::string& script) {
    return script.find("menuentry 'Try again' --id aula_retry") != std::string::npos &&
           script.find("menuentry 'Start from the local disk' --id aula_local") !=
               std::string::npos &&
           script.find("set default=aula_retry") != std::string::npos &&
           script.find("if linux") == std::string::npos;
  };
  std::string script = scriptFor(pc);
  EXPECT_TRUE(isGrubMenu(script)) << script;
  EXPECT_THAT(script, HasSubstr("menuentry \"  No thin image is released on the channel"));

  ASSERT_NO_FATAL_FAILURE(addImage("v1", 1));
  ASSERT_EQ(aulactl({"images", "promote", "v1", "--channel", "stable"}).exitCode, 0);
  script = scriptFor(pc);
  // The kernel and initramfs from the server GRUB came from; every word of
  // the command line quoted; the broker's HTTPS URL on the address the PC
  // reached.
  EXPECT_THAT(script,
              HasSubstr(fmt::format(
                  "if linux /boot/images/thin/v1/vmlinuz \"aula.broker={}\" \"aula.ca_fp={}\" "
                  "\"aula.image=thin/v1\"; then\n",
                  broker_->baseUrl(), broker_->server().caFingerprint())));
  EXPECT_THAT(script, HasSubstr("  if initrd /boot/images/thin/v1/initrd.img; then\n    boot\n"));
  EXPECT_THAT(script, HasSubstr("Loading this PC's image from the Aula server failed"));
  // The PC was recorded like one booting through iPXE.
  auto hosts = admin("GET", "/api/v1/boot-hosts", std::nullopt, 200);
  ASSERT_EQ(hosts.size(), 1U);
  EXPECT_EQ(hosts[0]["mac"], pc);

  // The image's files, whole, in frames of 1468 bytes and in plain blocks.
  const fs::path built = dir_.path() / "thin-v1";
  auto initrd = get("/boot/images/thin/v1/initrd.img");
  ASSERT_TRUE(initrd.ok) << initrd.errorText;
  EXPECT_EQ(initrd.data, readFile(built / "initrd.img"));
  auto kernel = get("/boot/images/thin/v1/vmlinuz", std::nullopt);
  ASSERT_TRUE(kernel.ok) << kernel.errorText;
  EXPECT_EQ(kernel.data, readFile(built / "vmlinuz"));
  EXPECT_EQ(get("/boot/images/thin/v9/vmlinuz").errorCode, 1);
  EXPECT_EQ(get("/boot/images/thin/v1/manifest.json").errorCode, 1);

  // Malformed requests get the menu, with nothing GRUB would read as syntax.
  script = scriptFor("a'b${x}");
  EXPECT_TRUE(isGrubMenu(script)) << script;
  EXPECT_THAT(script, HasSubstr("sent 'a'bS{x}' as its MAC address"));
  EXPECT_THAT(script, Not(HasSubstr("${x}")));
  auto arm = get(fmt::format("/boot/grub?mac={}&platform=efi&buildarch=arm64", pc));
  EXPECT_TRUE(isGrubMenu(arm.data)) << arm.data;
  EXPECT_EQ(get("/boot/ipxe").errorCode, 1);  // iPXE's script is on HTTP only
}

}  // namespace
}  // namespace aula::test
