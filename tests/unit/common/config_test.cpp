// Configuration: each kind of mistake gives a message that names the place.
#include "aula/common/config.hpp"

#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/temp_dir.hpp"

namespace aula::config {
namespace {

using ::testing::HasSubstr;

Schema brokerSchema() {
  Schema s;
  s.string("broker.listen", "127.0.0.1:8443", "address to serve on")
      .integer("broker.workers", 4, 1, 256, "worker threads")
      .boolean("broker.metrics", true)
      .number("placement.weight_cpu", 1.0)
      .stringList("storage.paths", {"/var/lib/aula/templates"})
      .stringMap("ldap.group_roles")
      .choice("database.backend", "sqlite", {"sqlite", "postgresql"})
      .require("broker.data_dir", Type::kString, "where state lives");
  return s;
}

EnvLookup envOf(const std::map<std::string, std::string>& vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end())
      return std::nullopt;
    return it->second;
  };
}

TEST(ConfigTest, LoadsValuesAndDefaults) {
  auto c = Config::parse(
      "[broker]\ndata_dir = \"/srv/aula\"\nworkers = 8\n"
      "[storage]\npaths = [\"/a\", \"/b\"]\n"
      "[ldap.group_roles]\n\"cn=teachers,dc=school\" = \"manager\"\n",
      "broker.toml", brokerSchema(), noEnvironment());
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->getString("broker.data_dir"), "/srv/aula");
  EXPECT_EQ(c->getInt("broker.workers"), 8);
  EXPECT_EQ(c->getString("broker.listen"), "127.0.0.1:8443");
  EXPECT_TRUE(c->getBool("broker.metrics"));
  EXPECT_DOUBLE_EQ(c->getDouble("placement.weight_cpu"), 1.0);
  EXPECT_EQ(c->getStringList("storage.paths"), (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ(c->getStringMap("ldap.group_roles").at("cn=teachers,dc=school"), "manager");
  EXPECT_EQ(c->origin("broker.workers"), "broker.toml:3:1");
  EXPECT_EQ(c->origin("broker.listen"), "default");
}

TEST(ConfigTest, MissingFileNamesThePath) {
  test::TempDir dir;
  auto c = Config::loadFile(dir.path() / "nope.toml", brokerSchema(), noEnvironment());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), Errc::kConfig);
  EXPECT_THAT(c.error().message(), HasSubstr("nope.toml"));
  EXPECT_THAT(c.error().message(), HasSubstr("No such file or directory"));
}

TEST(ConfigTest, BadTomlNamesFileLineAndColumn) {
  auto c = Config::parse("[broker]\ndata_dir = \"/x\"\nworkers = = 3\n", "broker.toml",
                         brokerSchema(), noEnvironment());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error().message(), HasSubstr("broker.toml:3:"));
  EXPECT_THAT(c.error().message(), HasSubstr("invalid TOML"));
}

TEST(ConfigTest, WrongTypeNamesKeyAndExpectedType) {
  auto c = Config::parse("[broker]\ndata_dir = \"/x\"\nworkers = \"eight\"\n", "broker.toml",
                         brokerSchema(), noEnvironment());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message(),
            "broker.toml:3:1: key 'broker.workers' must be an integer, but is a string.");
}

TEST(ConfigTest, WrongTypeInsideAnArray) {
  auto c = Config::parse("[broker]\ndata_dir = \"/x\"\n[storage]\npaths = [\"/a\", 3]\n",
                         "broker.toml", brokerSchema(), noEnvironment());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error().message(), HasSubstr("broker.toml:4:"));
  EXPECT_THAT(c.error().message(), HasSubstr("'storage.paths' must be an array of strings"));
}

TEST(ConfigTest, UnknownKeyIsRefusedWithASuggestion) {
  auto c = Config::parse("[broker]\ndata_dir = \"/x\"\nlsiten = \"0.0.0.0:1\"\n", "broker.toml",
                         brokerSchema(), noEnvironment());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message(),
            "broker.toml:3:1: unknown key 'broker.lsiten'. Did you mean 'broker.listen'?");
}

TEST(ConfigTest, UnknownSectionIsRefused) {
  auto c = Config::parse("[broker]\ndata_dir = \"/x\"\n[brokr]\nlisten = \"a\"\n", "b.toml",
                         brokerSchema(), noEnvironment());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error().message(), HasSubstr("b.toml:3:"));
  EXPECT_THAT(c.error().message(), HasSubstr("unknown key 'brokr'"));
}

TEST(ConfigTest, MissingRequiredKeyNamesSectionAndVariable) {
  auto c = Config::parse("[broker]\nworkers = 2\n", "broker.toml", brokerSchema(), noEnvironment());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error().message(), HasSubstr("required key 'broker.data_dir'"));
  EXPECT_THAT(c.error().message(), HasSubstr("[broker]"));
  EXPECT_THAT(c.error().message(), HasSubstr("AULA_BROKER_DATA_DIR"));
}

TEST(ConfigTest, OutOfRangeAndBadChoice) {
  auto r = Config::parse("[broker]\ndata_dir = \"/x\"\nworkers = 0\n", "b.toml", brokerSchema(),
                         noEnvironment());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("outside the allowed range 1 to 256"));
  auto c = Config::parse("[broker]\ndata_dir = \"/x\"\n[database]\nbackend = \"mysql\"\n", "b.toml",
                         brokerSchema(), noEnvironment());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error().message(), HasSubstr("must be one of: sqlite, postgresql"));
}

TEST(ConfigTest, EnvironmentOverridesTheFile) {
  auto c = Config::parse("[broker]\ndata_dir = \"/x\"\nworkers = 2\n", "b.toml", brokerSchema(),
                         envOf({{"AULA_BROKER_WORKERS", "16"}, {"AULA_STORAGE_PATHS", "/p,/q"}}));
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->getInt("broker.workers"), 16);
  EXPECT_EQ(c->origin("broker.workers"), "environment variable AULA_BROKER_WORKERS");
  EXPECT_EQ(c->getStringList("storage.paths"), (std::vector<std::string>{"/p", "/q"}));
}

TEST(ConfigTest, BadEnvironmentValueNamesTheVariable) {
  auto c = Config::parse("[broker]\ndata_dir = \"/x\"\n", "b.toml", brokerSchema(),
                         envOf({{"AULA_BROKER_METRICS", "maybe"}}));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message(),
            "environment variable AULA_BROKER_METRICS: value 'maybe' for key 'broker.metrics' "
            "must be a boolean (true or false).");
}

TEST(ConfigTest, LoadsFromAFile) {
  test::TempDir dir;
  auto path = dir.path() / "broker.toml";
  test::writeFile(path, "[broker]\ndata_dir = \"/d\"\n");
  auto c = Config::loadFile(path, brokerSchema(), noEnvironment());
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->getString("broker.data_dir"), "/d");
  EXPECT_TRUE(c->set("broker.workers", "3").ok());
  EXPECT_EQ(c->getInt("broker.workers"), 3);
  EXPECT_FALSE(c->set("broker.workers", "x").ok());
  EXPECT_FALSE(c->set("broker.nope", "1").ok());
}

}  // namespace
}  // namespace aula::config
