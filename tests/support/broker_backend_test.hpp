// A GoogleTest fixture for API tests that run on both databases: each test
// once on SQLite and once on a throw-away PostgreSQL (one server per suite,
// started by its first PostgreSQL test, and a database per test), with a
// whole broker (BrokerFixture) started on first use. Instantiate with
// INSTANTIATE_TEST_SUITE_P(Engines, Suite, kBothBackends, backendTestName).
#pragma once

#include <memory>
#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include "support/broker_fixture.hpp"
#include "support/postgres_server.hpp"

namespace aula::test {

// For GoogleTest's messages.
inline void PrintTo(Backend backend, std::ostream* out) {
  *out << backendName(backend);
}

inline std::string backendTestName(const ::testing::TestParamInfo<Backend>& param) {
  return param.param == Backend::kSqlite ? "Sqlite" : "Postgres";
}

inline const auto kBothBackends = ::testing::Values(Backend::kSqlite, Backend::kPostgres);

class BrokerBackendTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void TearDownTestSuite() { postgres_.reset(); }

  void SetUp() override {
    options_.backend = GetParam();
    if (GetParam() != Backend::kPostgres)
      return;
    std::string why;
    if (!PostgresServer::available(&why))
      GTEST_SKIP() << why;
    if (!postgres_)
      postgres_ = std::make_unique<PostgresServer>();
    // A database per test: nothing one test leaves behind reaches another.
    const std::string name = "t_" + std::to_string(++databases_);
    postgres_->createDatabase(name);
    options_.postgresConninfo = postgres_->conninfo(name);
  }

  void TearDown() override { broker_.reset(); }

  // The broker, started on first use with options_, which a test may change before.
  BrokerFixture& broker() {
    if (!broker_)
      broker_ = std::make_unique<BrokerFixture>(options_);
    return *broker_;
  }
  ApiClient& api() { return broker().api(); }
  const SeedIds& seed() { return broker().seed(); }
  const std::string& token(const std::string& user) {
    return user == "admin" ? broker().adminToken() : broker().tokenOf(user);
  }

  BrokerOptions options_;
  std::unique_ptr<BrokerFixture> broker_;
  static inline std::unique_ptr<PostgresServer> postgres_;
  static inline int databases_ = 0;
};

}  // namespace aula::test
