// A throw-away PostgreSQL server for tests: a new cluster in a temporary
// directory, listening on a free port on 127.0.0.1 with trust
// authentication, stopped and removed when the object goes away.
//
// Like the other test helpers it fails by throwing, which GoogleTest reports
// as a failure of the running test. Tests that need it call available()
// first and skip, with the reason, where PostgreSQL is not installed.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "support/temp_dir.hpp"

namespace aula::test {

class PostgresServer {
 public:
  // False, with the reason in `why`, when this machine cannot run a server:
  // no initdb and pg_ctl under /usr/lib/postgresql/*/bin (or in
  // $AULA_TEST_PG_BINDIR), or running as root without a `postgres` user to
  // run them as, since PostgreSQL refuses to run as root.
  static bool available(std::string* why);

  // Creates the cluster, starts it and creates the database "aula", owned by
  // the superuser "aula". Throws std::runtime_error.
  PostgresServer();
  // Stops the server (immediate shutdown) and removes its files.
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  int port() const { return port_; }
  // "127.0.0.1:<port>", as the broker's messages name it.
  std::string address() const;
  // "host=127.0.0.1 port=<port> dbname=<dbname> user=aula"
  std::string conninfo(std::string_view dbname = "aula") const;

  // CREATE DATABASE; throws std::runtime_error.
  void createDatabase(std::string_view name);

  // A fast shutdown that keeps the data, and a start on the same data and
  // port, for tests of a database that goes away and comes back.
  void stop();
  void start();
  bool running() const { return running_; }

 private:
  // Runs a PostgreSQL program from the bin folder, as `postgres` when we are
  // root; throws with its output on failure.
  void runTool(std::string_view tool, std::vector<std::string> args, bool asServerUser);
  std::string logTail() const;

  TempDir dir_;  // first, so that it is removed after the server stopped
  std::filesystem::path bin_;
  std::filesystem::path data_;
  std::filesystem::path run_;  // the socket and the server's log
  int port_ = 0;
  bool running_ = false;
};

}  // namespace aula::test
