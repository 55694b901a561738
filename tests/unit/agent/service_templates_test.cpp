// The agent's template routes as the broker calls them (AgentService::handle
// with the broker's certificate name), over a fake hypervisor and real
// qemu-img on small images: a running desktop's disk is refused, a shut-off
// one is flattened or re-based and the image holds the desktop's data, and a
// base is deleted only once no image uses it.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "aula/agent/disks.hpp"
#include "aula/agent/hypervisor.hpp"
#include "aula/agent/service.hpp"
#include "aula/common/json.hpp"
#include "aula/common/process.hpp"

#include "support/fake_hypervisor.hpp"
#include "support/temp_dir.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using json::Json;
using ::testing::HasSubstr;

using test::FakeHypervisor;

class ServiceTemplatesTest : public ::testing::Test {
 protected:
  ServiceTemplatesTest()
      : templates_(dir_ / "templates"),
        desktops_(dir_ / "desktops"),
        disks_({{"templates", templates_}, {"desktops", desktops_}}, runner_),
        service_(ServiceOptions{}, hypervisor_, disks_) {
    fs::create_directories(templates_);
    fs::create_directories(desktops_);
  }

  void SetUp() override {
    if (::access("/usr/bin/qemu-img", X_OK) != 0 || ::access("/usr/bin/qemu-io", X_OK) != 0)
      GTEST_SKIP() << "qemu-img and qemu-io (Debian package qemu-utils) are not installed.";
    // The template's base with 0xcd at 1 MiB; the desktop wrote 0xab at 0.
    run({"qemu-img", "create", "-q", "-f", "qcow2", (templates_ / "base.qcow2").native(), "4M"});
    ASSERT_TRUE(io(templates_ / "base.qcow2", "write -P 0xcd 1M 64k"));
    auto overlay = disks_.createOverlay("templates", "base.qcow2", "desktops", "3/7.qcow2");
    ASSERT_TRUE(overlay.ok()) << overlay.error().message();
    ASSERT_TRUE(io(*overlay, "write -P 0xab 0 64k"));
    hypervisor_.domains["aula-7"].state = "shut off";
  }

  void run(std::vector<std::string> argv) {
    auto outcome = process::runChecked(runner_, process::Command{.argv = std::move(argv)});
    ASSERT_TRUE(outcome.ok()) << outcome.error().message();
  }

  bool io(const fs::path& image, const std::string& command) {
    auto outcome = runner_.run({.argv = {"qemu-io", "-f", "qcow2", "-c", command, image.native()}});
    return outcome.ok() && outcome->succeeded() &&
           outcome->out.find("verification failed") == std::string::npos;
  }

  // A POST as the broker sends it; the status and the parsed body.
  std::pair<int, Json> post(const std::string& path, const Json& body) {
    http::ServerRequest request;
    request.method = "POST";
    request.target = path;
    request.path = path;
    request.body = body.dump();
    request.remoteAddress = "127.0.0.1";
    request.clientCommonName = kBrokerCommonName;
    auto response = service_.handle(request);
    return {response.status, Json::parse(response.body, nullptr, false)};
  }

  std::pair<int, Json> fromDesktop(const std::string& target, const std::string& mode) {
    return post("/v1/templates/from-desktop", Json{{"domain", "aula-7"},
                                                   {"disk_path", "3/7.qcow2"},
                                                   {"template_storage", "templates"},
                                                   {"template_disk", target},
                                                   {"mode", mode}});
  }

  static std::string message(const Json& body) {
    return body.is_object() && body.contains("error") ? body["error"].value("message", "") : "";
  }

  test::TempDir dir_;
  fs::path templates_;
  fs::path desktops_;
  process::SystemRunner runner_;
  FakeHypervisor hypervisor_;
  Disks disks_;
  AgentService service_;
};

TEST_F(ServiceTemplatesTest, RefusesTheDiskOfARunningDesktop) {
  for (const char* state : {"running", "paused"}) {
    hypervisor_.domains["aula-7"].state = state;
    auto [status, body] = fromDesktop("from-desktop/7-1.qcow2", "flatten");
    EXPECT_EQ(status, 409) << body.dump();
    EXPECT_EQ(message(body), fmt::format("The desktop aula-7 is {}; shut it down first, since the "
                                         "disk of a running guest is not consistent.",
                                         state));
  }
  EXPECT_FALSE(fs::exists(templates_ / "from-desktop"));
}

TEST_F(ServiceTemplatesTest, FlattensOrRebasesAShutOffDesktopsDisk) {
  auto [status, flat] = fromDesktop("from-desktop/7-1.qcow2", "flatten");
  ASSERT_EQ(status, 200) << flat.dump();
  EXPECT_EQ(flat["template_disk"], "from-desktop/7-1.qcow2");
  EXPECT_GT(flat["size_bytes"].get<std::int64_t>(), 0);
  EXPECT_TRUE(flat["backing"].is_null()) << flat.dump();
  const auto flatImage = templates_ / "from-desktop" / "7-1.qcow2";
  EXPECT_TRUE(io(flatImage, "read -P 0xab 0 64k")) << "the desktop's own data is missing";
  EXPECT_TRUE(io(flatImage, "read -P 0xcd 1M 64k")) << "the base's data is missing";

  // Libvirt may not know the domain at all (never defined here): that is shut off too.
  hypervisor_.domains.clear();
  auto [status2, rebased] = fromDesktop("from-desktop/7-2.qcow2", "rebase");
  ASSERT_EQ(status2, 200) << rebased.dump();
  EXPECT_EQ(rebased["backing"], (templates_ / "base.qcow2").native());
  const auto rebasedImage = templates_ / "from-desktop" / "7-2.qcow2";
  EXPECT_TRUE(io(rebasedImage, "read -P 0xab 0 64k"));
  EXPECT_TRUE(io(rebasedImage, "read -P 0xcd 1M 64k"));
  EXPECT_LT(rebased["size_bytes"].get<std::int64_t>(), flat["size_bytes"].get<std::int64_t>());

  // The name is never reused.
  auto [again, exists] = fromDesktop("from-desktop/7-2.qcow2", "flatten");
  EXPECT_EQ(again, 409) << exists.dump();
  EXPECT_THAT(message(exists), HasSubstr("already exists"));
}

TEST_F(ServiceTemplatesTest, DeletesABaseOnlyWhenNoImageUsesIt) {
  ASSERT_EQ(fromDesktop("from-desktop/7-2.qcow2", "rebase").first, 200);
  auto [status, refused] =
      post("/v1/templates/delete-base", Json{{"storage", "templates"}, {"disk", "base.qcow2"}});
  EXPECT_EQ(status, 409) << refused.dump();
  EXPECT_THAT(message(refused), HasSubstr("cannot be deleted while"));
  EXPECT_THAT(message(refused), HasSubstr("7-2.qcow2"));
  EXPECT_THAT(message(refused), HasSubstr("7.qcow2"));
  EXPECT_TRUE(fs::exists(templates_ / "base.qcow2"));

  // The re-based template's own image has no users.
  auto [deleted, answer] = post("/v1/templates/delete-base",
                                Json{{"storage", "templates"}, {"disk", "from-desktop/7-2.qcow2"}});
  EXPECT_EQ(deleted, 200) << answer.dump();
  EXPECT_EQ(answer["deleted"], true);
  EXPECT_FALSE(fs::exists(templates_ / "from-desktop" / "7-2.qcow2"));
  auto [missing, none] = post("/v1/templates/delete-base",
                              Json{{"storage", "templates"}, {"disk", "from-desktop/7-2.qcow2"}});
  EXPECT_EQ(missing, 404) << none.dump();

  // Once the desktop's disk is gone too, the base goes.
  ASSERT_TRUE(disks_.deleteOverlay("desktops", "3/7.qcow2").ok());
  auto [last, gone] =
      post("/v1/templates/delete-base", Json{{"storage", "templates"}, {"disk", "base.qcow2"}});
  EXPECT_EQ(last, 200) << gone.dump();
  EXPECT_FALSE(fs::exists(templates_ / "base.qcow2"));
}

TEST_F(ServiceTemplatesTest, BadRequestsSayWhatIsWrongAndTouchNothing) {
  struct Case {
    std::string path;
    Json body;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"/v1/templates/from-desktop",
       Json{{"domain", "aula-7"},
            {"disk_path", "3/7.qcow2"},
            {"template_disk", "t.qcow2"},
            {"mode", "copy"}},
       "'flatten' or 'rebase', not 'copy'"},
      {"/v1/templates/from-desktop",
       Json{{"domain", "stray"}, {"disk_path", "3/7.qcow2"}, {"template_disk", "t.qcow2"}},
       "not an Aula desktop's"},
      {"/v1/templates/from-desktop",
       Json{{"domain", "aula-7"},
            {"disk_path", "3/7.qcow2"},
            {"template_storage", "desktops"},
            {"template_disk", "t.qcow2"}},
       "cannot go into the 'desktops' storage"},
      {"/v1/templates/from-desktop",
       Json{{"domain", "aula-7"}, {"disk_path", "3/7.qcow2"}, {"template_disk", "../t.qcow2"}},
       "'..'"},
      {"/v1/templates/from-desktop", Json{{"domain", "aula-7"}, {"size", 1}}, "'size'"},
      {"/v1/templates/delete-base", Json{{"storage", "desktops"}, {"disk", "3/7.qcow2"}},
       "not kept in the 'desktops' storage"},
      {"/v1/templates/delete-base", Json{{"storage", "templates"}}, "disk"},
  };
  for (const auto& c : cases) {
    auto [status, body] = post(c.path, c.body);
    EXPECT_EQ(status, 400) << c.body.dump() << " " << body.dump();
    EXPECT_THAT(message(body), HasSubstr(c.says)) << c.body.dump();
  }
  EXPECT_TRUE(fs::exists(desktops_ / "3" / "7.qcow2"));
  EXPECT_FALSE(fs::exists(templates_ / "t.qcow2"));
}

}  // namespace
}  // namespace aula::agent
