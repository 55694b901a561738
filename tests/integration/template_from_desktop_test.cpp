// "Make a template from this desktop", for real: aula-broker and aula-agent
// as processes (AgentStack), guests on qemu:///system under TCG. A student's
// desktop writes a pattern to its disk through QEMU's own I/O tester, is
// stopped, and an admin makes a template of it in each mode; a new desktop
// of each template starts and reads the pattern back. The flattened image
// stands alone, the re-based one names the test guest's image as its base,
// so the test guest's template cannot be deleted while it exists; deleting
// the new templates deletes the images Aula made and nothing else.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/agent/disks.hpp"

#include "support/agent_stack.hpp"
#include "support/libvirtd_fixture.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {
namespace {

namespace fs = std::filesystem;
using json::Json;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

class TemplateFromDesktopTest : public AgentStackTest {
 protected:
  static void SetUpTestSuite() { startStack(); }

  void TearDown() override {
    if (env_ == nullptr)
      return;
    deleteDesktops();
    // The newest first: a re-based template holds the one before.
    for (auto it = templates_.rbegin(); it != templates_.rend(); ++it)
      deleteTemplate(*it);
  }

  ApiResponse deleteTemplate(std::int64_t id) {
    auto r = env_->api->call("DELETE", fmt::format("/api/v1/templates/{}", id), env_->adminToken);
    if (r.status == 204)
      std::erase(templates_, id);
    return r;
  }

  std::int64_t newDesktop(const std::string& name, std::int64_t templateId) {
    return AgentStackTest::newDesktop(name, templateId, true);
  }

  ApiResponse asStudent(std::string_view method, const std::string& path) {
    return env_->api->call(method, path, env_->studentToken);
  }

  ApiResponse makeTemplate(std::int64_t desktop, const std::string& name, const std::string& mode) {
    auto r = env_->api->call(
        "POST", fmt::format("/api/v1/desktops/{}/template", desktop), env_->adminToken,
        Json{{"name", name}, {"mode", mode}, {"access", Json::array({"everyone"})}});
    if (r.status == 201)
      templates_.push_back(r.body["id"].get<std::int64_t>());
    return r;
  }

  // A stopped desktop of the test guest whose disk holds 0xcd at 1 MiB.
  std::int64_t desktopWithPattern(const std::string& name) {
    auto id = newDesktop(name, env_->templateId);
    auto r = asStudent("POST", fmt::format("/api/v1/desktops/{}/start", id));
    EXPECT_EQ(r.status, 200) << r.describe();
    auto domain = fmt::format("aula-{}", id);
    EXPECT_THAT(qemuIo(domain, "write -P 0xcd 1M 64k"), HasSubstr("wrote 65536/65536"));
    // Making a template of a running desktop is refused.
    auto running = makeTemplate(id, name + " while running", "flatten");
    EXPECT_EQ(running.status, 409) << running.describe();
    EXPECT_THAT(running.errorMessage(), HasSubstr("stop it first"));
    r = asStudent("POST", fmt::format("/api/v1/desktops/{}/stop?force=true", id));
    EXPECT_EQ(r.status, 200) << r.describe();
    EXPECT_EQ(domainState(domain), "shut off");
    auto state = [&] {
      return env_->admin("GET", fmt::format("/api/v1/desktops/{}", id))["state"];
    };
    EXPECT_EQ(state(), "stopped");
    // A heartbeat the agent sampled before the stop and delivered after it is
    // older than the stop: it must not mark the desktop running again. Two
    // more heartbeats later, one sampled before the stop has surely arrived.
    auto lastBeat = [&] {
      return env_->admin("GET", "/api/v1/hosts")[0]["last_heartbeat"].get<std::int64_t>();
    };
    const auto beatAtStop = lastBeat();
    EXPECT_TRUE(waitFor([&] { return lastBeat() >= beatAtStop + 2; }, 30s))
        << "the agent stopped sending heartbeats";
    EXPECT_EQ(state(), "stopped");
    return id;
  }

  // Starts a new desktop of `templateId` and reads the pattern back in the guest.
  void expectPatternIn(std::int64_t templateId, const std::string& name) {
    auto id = newDesktop(name, templateId);
    auto r = asStudent("POST", fmt::format("/api/v1/desktops/{}/start", id));
    ASSERT_EQ(r.status, 200) << r.describe();
    auto read = qemuIo(fmt::format("aula-{}", id), "read -P 0xcd 1M 64k");
    EXPECT_THAT(read, HasSubstr("read 65536/65536")) << name;
    EXPECT_THAT(read, Not(HasSubstr("verification failed")))
        << "A desktop of the template made from another does not have its data: " << name;
    r = asStudent("POST", fmt::format("/api/v1/desktops/{}/stop?force=true", id));
    EXPECT_EQ(r.status, 200) << r.describe();
  }

  std::vector<std::int64_t> templates_;
};

TEST_F(TemplateFromDesktopTest, AFlattenedTemplateStandsAloneAndKeepsTheDesktopsData) {
  auto source = desktopWithPattern("flatten source");
  auto made = makeTemplate(source, "Flattened", "flatten");
  ASSERT_EQ(made.status, 201) << made.describe();
  const auto image = env_->templates / made.body["base_disk"].get<std::string>();
  ASSERT_TRUE(fs::exists(image)) << image;
  auto backing = agent::Disks::backingFile(image);
  ASSERT_TRUE(backing.ok()) << backing.error().message();
  EXPECT_FALSE(backing->has_value()) << "A flattened image names a base: " << (*backing)->native();
  EXPECT_TRUE(made.body["backing"].is_null());

  expectPatternIn(made.body["id"].get<std::int64_t>(), "from flattened");

  // The template goes with its image, once no desktop uses it.
  deleteDesktops();
  auto r = deleteTemplate(made.body["id"].get<std::int64_t>());
  ASSERT_EQ(r.status, 204) << r.describe();
  EXPECT_FALSE(fs::exists(image)) << "Aula's own image stayed after its template was deleted.";
  EXPECT_TRUE(fs::exists(env_->templates / "test.qcow2"));
  auto outcome = env_->admin("GET", "/api/v1/audit?action=template.image_delete");
  ASSERT_FALSE(outcome.empty());
  EXPECT_EQ(outcome[0]["detail"]["result"], "deleted") << outcome.dump();
}

TEST_F(TemplateFromDesktopTest, ARebasedTemplateNeedsItsSourceWhichCannotBeDeletedMeanwhile) {
  auto source = desktopWithPattern("rebase source");
  auto made = makeTemplate(source, "Rebased", "rebase");
  ASSERT_EQ(made.status, 201) << made.describe();
  const auto image = env_->templates / made.body["base_disk"].get<std::string>();
  auto backing = agent::Disks::backingFile(image);
  ASSERT_TRUE(backing.ok()) << backing.error().message();
  ASSERT_TRUE(backing->has_value()) << "A re-based image names no base.";
  EXPECT_EQ(fs::canonical(**backing), fs::canonical(env_->templates / "test.qcow2"));
  EXPECT_EQ(made.body["backing"], (Json{{"storage", "templates"}, {"disk", "test.qcow2"}}));
  EXPECT_LT(fs::file_size(image), fs::file_size(env_->templates / "test.qcow2"))
      << "A re-based image should hold only the desktop's changes.";

  expectPatternIn(made.body["id"].get<std::int64_t>(), "from rebased");

  // With every desktop of the test guest gone, its template is still needed.
  deleteDesktops();
  auto refused = deleteTemplate(env_->templateId);
  EXPECT_EQ(refused.status, 409) << refused.describe();
  EXPECT_THAT(refused.errorMessage(), HasSubstr("the template 'Rebased' is re-based on its image"));
  EXPECT_TRUE(fs::exists(env_->templates / "test.qcow2"));

  auto r = deleteTemplate(made.body["id"].get<std::int64_t>());
  ASSERT_EQ(r.status, 204) << r.describe();
  EXPECT_FALSE(fs::exists(image));
  EXPECT_TRUE(fs::exists(env_->templates / "test.qcow2")) << "The admin's own image was deleted.";
}

}  // namespace
}  // namespace aula::test
