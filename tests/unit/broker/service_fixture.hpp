// A whole Broker over a fresh SQLite database in a temporary directory, with
// a clock the test moves and simulated hosts: the fixture of the services'
// unit tests. It bootstraps an admin and makes users, categories, a pool and
// a template the way an admin would, through the services themselves.
#pragma once

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "aula/broker/broker.hpp"
#include "aula/broker/schema.hpp"

#include "support/temp_dir.hpp"

namespace aula::broker::test {

// The value of a Result the test needs to go on; fails the test otherwise.
template <typename T>
T must(Result<T> r) {
  if (!r.ok()) {
    ADD_FAILURE() << r.error().message();
    throw std::runtime_error(r.error().message());
  }
  return std::move(r).value();
}

inline void must(const Status& s) {
  if (!s.ok()) {
    ADD_FAILURE() << s.error().message();
    throw std::runtime_error(s.error().message());
  }
}

class ServiceTest : public ::testing::Test {
 protected:
  static constexpr const char* kPassword = "a-long-enough-password";

  void SetUp() override {
    // A file, not ":memory:": the adapter refuses ":memory:", since it keeps
    // a pool of WAL connections and each would be a database of its own.
    auto opened = db::openSqlite({.path = (dir_.path() / "aula.db").string()});
    ASSERT_TRUE(opened.ok()) << opened.error().message();
    db_ = std::move(opened).value();
    ASSERT_TRUE(db_->migrate(migrations()).ok());
    BrokerSettings settings;
    settings.argon2 = {.memoryKib = 1024, .iterations = 1};
    settings.storage = {{"templates", (dir_.path() / "templates").string()},
                        {"desktops", (dir_.path() / "desktops").string()}};
    adjust(settings);
    broker_ = std::make_unique<Broker>(*db_, std::move(settings), clock_, events_, hosts_, nullptr);
    ASSERT_TRUE(broker_->auth.bootstrap("admin", kPassword).ok());
    admin_ = signIn("admin");
  }

  // Settings a test changes before the broker is built.
  virtual void adjust(BrokerSettings&) {}

  Broker& broker() { return *broker_; }

  // The Actor of `username` after a password login, as the API would see it.
  Actor signIn(const std::string& username) {
    auto session = must(broker_->auth.login(username, kPassword, "192.0.2.1"));
    return must(broker_->auth.authenticate(session["token"].get<std::string>(), "192.0.2.1"));
  }

  std::int64_t makeCategory(const std::string& name) {
    return must(broker_->org.createCategory(admin_, Json{{"name", name}}))["id"]
        .get<std::int64_t>();
  }

  // A user with kPassword; signed in with signIn().
  std::int64_t makeUser(const std::string& username, const std::string& role,
                        std::optional<std::int64_t> categoryId = std::nullopt) {
    Json body{{"username", username}, {"role", role}, {"password", kPassword}};
    if (categoryId)
      body["category_id"] = *categoryId;
    return must(broker_->org.createUser(admin_, body))["id"].get<std::int64_t>();
  }

  std::int64_t makePool() {
    return must(broker_->hosts.createPool(admin_, Json{{"name", "lab"}}))["id"].get<std::int64_t>();
  }

  // A template every user may use.
  std::int64_t makeTemplate() {
    return must(
               broker_->templates.create(admin_, Json{{"name", "Debian"},
                                                      {"base_disk", "debian.qcow2"},
                                                      {"disk_gb", 10},
                                                      {"vcpus", 2},
                                                      {"memory_mb", 2048},
                                                      {"access", Json::array({"everyone"})}}))["id"]
        .get<std::int64_t>();
  }

  std::int64_t makeDesktop(const Actor& owner, std::int64_t templateId, const std::string& name) {
    return must(broker_->desktops.create(owner,
                                         Json{{"name", name}, {"template_id", templateId}}))["id"]
        .get<std::int64_t>();
  }

  // The load of a host with room for a few desktops.
  static Json roomyLoad() {
    return Json{{"cpu_idle", 0.9}, {"free_memory_mb", 30000}, {"cpus", 16}, {"memory_mb", 32768}};
  }

  aula::test::TempDir dir_;
  ManualClock clock_;
  EventBus events_;
  SimulatedHostLink hosts_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<Broker> broker_;
  Actor admin_;
};

}  // namespace aula::broker::test
