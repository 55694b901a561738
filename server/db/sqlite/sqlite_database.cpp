// The SQLite adapter: a pool of connections to one database file in WAL mode,
// so that readers never wait for the writer and writers queue on BEGIN
// IMMEDIATE instead of failing halfway through a transaction.
#include <cassert>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <unordered_map>

#include <sqlite3.h>

#include "aula/broker/database.hpp"
#include "aula/common/callback_guard.hpp"
#include "aula/common/log.hpp"

#include "db/database_internal.hpp"

namespace aula::broker::db {
namespace {

struct SqliteCloser {
  void operator()(sqlite3* handle) const { sqlite3_close_v2(handle); }
};
struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};
using SqliteHandle = std::unique_ptr<sqlite3, SqliteCloser>;
using StatementHandle = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

// Enough for every statement the broker has, few enough that a caller that
// builds SQL at run time cannot grow the cache without bound.
constexpr std::size_t kStatementCacheSize = 256;

struct Settings {
  std::string path;
  std::chrono::milliseconds busyTimeout;
};

Error sqliteError(sqlite3* handle, int rc, std::string_view sql, const Settings& settings) {
  if (handle != nullptr && (rc & 0xff) == rc)
    rc = sqlite3_extended_errcode(handle);
  const std::string message =
      detail::oneLine(handle != nullptr ? sqlite3_errmsg(handle) : sqlite3_errstr(rc));
  const std::string& path = settings.path;
  std::string text;
  Errc code = Errc::kInternal;
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        code = Errc::kAlreadyExists;
        text = fmt::format("A record with the same unique value already exists: {}.", message);
      } else {
        code = Errc::kConflict;
        text = fmt::format("The change breaks a rule of the database: {}.", message);
      }
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      code = Errc::kUnavailable;
      text = fmt::format(
          "The SQLite database {} stayed locked by another connection for more than {} ms; try "
          "again.",
          path, settings.busyTimeout.count());
      break;
    case SQLITE_CANTOPEN:
      code = Errc::kUnavailable;
      text = fmt::format(
          "Cannot open the SQLite database {} ({}); check that the file and its folder exist and "
          "are writable.",
          path, message);
      break;
    case SQLITE_IOERR:
      code = Errc::kIo;
      text = fmt::format("Reading or writing the SQLite database {} failed: {}.", path, message);
      break;
    case SQLITE_FULL:
      code = Errc::kIo;
      text = fmt::format("The disk holding the SQLite database {} is full; free some space.", path);
      break;
    case SQLITE_READONLY:
      code = Errc::kIo;
      text = fmt::format("Cannot write the SQLite database {} ({}); check its permissions.", path,
                         message);
      break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      code = Errc::kIo;
      text = fmt::format(
          "The file {} is not a usable SQLite database ({}); restore a backup or choose another "
          "path.",
          path, message);
      break;
    default:
      text =
          fmt::format("SQLite rejected the statement '{}': {}.", detail::sqlExcerpt(sql), message);
      break;
  }
  return Error(code, std::move(text), rc);
}

// Leaves a cached statement ready for its next use, whatever happened.
class StatementReset {
 public:
  explicit StatementReset(sqlite3_stmt* statement) : statement_(statement) {}
  ~StatementReset() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }
  StatementReset(const StatementReset&) = delete;
  StatementReset& operator=(const StatementReset&) = delete;

 private:
  sqlite3_stmt* statement_;
};

// One sqlite3 handle and its statements, used by one thread at a time.
class Connection {
 public:
  Connection(SqliteHandle handle, const Settings& settings)
      : handle_(std::move(handle)), settings_(settings) {}

  sqlite3* handle() const { return handle_.get(); }
  Error error(int rc, std::string_view sql) const {
    return sqliteError(handle_.get(), rc, sql, settings_);
  }

  Result<sqlite3_stmt*> prepare(std::string_view sql) {
    std::string key(sql);
    if (auto found = statements_.find(key); found != statements_.end())
      return found->second.get();
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v3(handle_.get(), sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &raw, &tail);
    StatementHandle statement(raw);
    if (rc != SQLITE_OK)
      return error(rc, sql);
    if (statement == nullptr) {
      return makeError(Errc::kInternal, "The SQL statement '{}' is empty.",
                       detail::sqlExcerpt(sql));
    }
    std::string_view rest(tail, static_cast<std::size_t>(sql.data() + sql.size() - tail));
    if (!detail::splitStatements(rest).empty()) {
      return makeError(Errc::kInternal,
                       "The SQL '{}' holds more than one statement; run them one at a time.",
                       detail::sqlExcerpt(sql));
    }
    if (statements_.size() >= kStatementCacheSize)
      statements_.clear();
    return statements_.emplace(std::move(key), std::move(statement)).first->second.get();
  }

  // Runs a statement that takes no parameters and whose rows do not matter.
  Status run(std::string_view sql) {
    sqlite3_stmt* statement = AULA_TRY(prepare(sql));
    StatementReset reset(statement);
    int rc = SQLITE_ROW;
    while (rc == SQLITE_ROW)
      rc = sqlite3_step(statement);
    if (rc != SQLITE_DONE)
      return error(rc, sql);
    return okStatus();
  }

  // Ends the open transaction, if SQLite has not already ended it: it rolls
  // back on its own after some errors (a full disk, an I/O error).
  void rollback() {
    if (sqlite3_get_autocommit(handle_.get()) != 0)
      return;
    if (auto status = run("ROLLBACK"); !status) {
      log::warn("Rolling back a SQLite transaction failed. {}", status.error().message());
    }
  }

 private:
  SqliteHandle handle_;
  const Settings& settings_;
  // Declared after handle_ so that the statements are finalized first.
  std::unordered_map<std::string, StatementHandle> statements_;
};

class Pool {
 public:
  void add(std::unique_ptr<Connection> connection) {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(connection));
  }

  // Borrows a connection and gives it back when it goes out of scope.
  class Lease {
   public:
    Lease(Pool& pool, std::unique_ptr<Connection> connection)
        : pool_(pool), connection_(std::move(connection)) {}
    ~Lease() { pool_.giveBack(std::move(connection_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Connection& operator*() const { return *connection_; }
    Connection* operator->() const { return connection_.get(); }

   private:
    Pool& pool_;
    std::unique_ptr<Connection> connection_;
  };

  Lease acquire() {
    std::unique_lock lock(mutex_);
    available_.wait(lock, [&] { return !idle_.empty(); });
    auto connection = std::move(idle_.back());
    idle_.pop_back();
    return Lease(*this, std::move(connection));
  }

 private:
  void giveBack(std::unique_ptr<Connection> connection) {
    {
      std::lock_guard lock(mutex_);
      idle_.push_back(std::move(connection));
    }
    available_.notify_one();
  }

  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Connection>> idle_;
};

Row readRow(sqlite3_stmt* statement) {
  const int count = sqlite3_column_count(statement);
  std::vector<Value> columns;
  columns.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    switch (sqlite3_column_type(statement, i)) {
      case SQLITE_INTEGER:
        columns.emplace_back(std::int64_t{sqlite3_column_int64(statement, i)});
        break;
      case SQLITE_FLOAT:
        columns.emplace_back(sqlite3_column_double(statement, i));
        break;
      case SQLITE_TEXT: {
        const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement, i));
        const auto size = static_cast<std::size_t>(sqlite3_column_bytes(statement, i));
        columns.emplace_back(std::string(text, size));
        break;
      }
      case SQLITE_BLOB: {
        const auto* blob = static_cast<const char*>(sqlite3_column_blob(statement, i));
        const auto size = static_cast<std::size_t>(sqlite3_column_bytes(statement, i));
        columns.emplace_back(blob == nullptr ? std::string() : std::string(blob, size));
        break;
      }
      default:
        columns.emplace_back(std::monostate{});
        break;
    }
  }
  return Row(std::move(columns));
}

class SqliteTransaction final : public Transaction {
 public:
  SqliteTransaction(Connection& connection, TxMode mode) : connection_(connection), mode_(mode) {}

  Result<std::vector<Row>> query(std::string_view sql, const Params& params) override {
    sqlite3_stmt* statement = AULA_TRY(remember(start(sql, params)));
    StatementReset reset(statement);
    std::vector<Row> rows;
    for (;;) {
      int rc = sqlite3_step(statement);
      if (rc == SQLITE_DONE)
        return rows;
      if (rc != SQLITE_ROW)
        return remember(connection_.error(rc, sql));
      rows.push_back(readRow(statement));
    }
  }

  Result<std::int64_t> exec(std::string_view sql, const Params& params) override {
    sqlite3_stmt* statement = AULA_TRY(remember(start(sql, params)));
    StatementReset reset(statement);
    int rc = SQLITE_ROW;
    // RETURNING rows are stepped through: the change is only complete at DONE.
    while (rc == SQLITE_ROW)
      rc = sqlite3_step(statement);
    if (rc != SQLITE_DONE)
      return remember(connection_.error(rc, sql));
    return std::int64_t{sqlite3_changes64(connection_.handle())};
  }

  // In-process, a statement costs no round trip: it runs at once, and its
  // error, remembered, fails the transaction.
  // NOLINTNEXTLINE(performance-unnecessary-value-param): PostgreSQL's keeps it
  void execLater(std::string_view sql, Params params) override {
    if (auto done = exec(sql, params); !done)
      log::debug("A queued write failed; its transaction fails. {}", done.error().message());
  }

  Dialect dialect() const override { return Dialect::kSqlite; }

  const std::optional<Error>& firstError() const { return firstError_; }

 private:
  Result<sqlite3_stmt*> start(std::string_view sql, const Params& params) {
    sqlite3_stmt* statement = AULA_TRY(connection_.prepare(sql));
    if (mode_ == TxMode::kRead && sqlite3_stmt_readonly(statement) == 0) {
      return makeError(Errc::kInternal,
                       "The SQL statement '{}' changes the database inside a read transaction.",
                       detail::sqlExcerpt(sql));
    }
    const int expected = sqlite3_bind_parameter_count(statement);
    if (static_cast<std::size_t>(expected) != params.size()) {
      return makeError(Errc::kInternal, "The SQL statement '{}' takes {} values but was given {}.",
                       detail::sqlExcerpt(sql), expected, params.size());
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      const int index = static_cast<int>(i) + 1;
      const Value& value = params[i];
      int rc = SQLITE_OK;
      if (const auto* whole = std::get_if<std::int64_t>(&value)) {
        rc = sqlite3_bind_int64(statement, index, *whole);
      } else if (const auto* real = std::get_if<double>(&value)) {
        rc = sqlite3_bind_double(statement, index, *real);
      } else if (const auto* text = std::get_if<std::string>(&value)) {
        // No copy: the values outlive the statement's run, and StatementReset
        // clears the bindings before they go.
        rc =
            sqlite3_bind_text64(statement, index, text->data(), text->size(), nullptr, SQLITE_UTF8);
      } else {
        rc = sqlite3_bind_null(statement, index);
      }
      if (rc != SQLITE_OK) {
        sqlite3_clear_bindings(statement);
        return connection_.error(rc, sql);
      }
    }
    return statement;
  }

  // A failed statement dooms the transaction, as it does in PostgreSQL, so a
  // body that carries on after an error behaves the same on both engines.
  template <typename T>
  Result<T> remember(Result<T> result) {
    if (!result && !firstError_)
      firstError_ = result.error();
    return result;
  }
  Error remember(Error error) {
    if (!firstError_)
      firstError_ = error;
    return error;
  }

  Connection& connection_;
  TxMode mode_;
  std::optional<Error> firstError_;
};

// Rolls back a transaction that a throwing body left open, so that the
// connection goes back to the pool clean.
class OpenTransaction {
 public:
  explicit OpenTransaction(Connection& connection) : connection_(connection) {}
  ~OpenTransaction() {
    if (open_)
      guardCallback("rolling back a SQLite transaction", [this] { connection_.rollback(); });
  }
  OpenTransaction(const OpenTransaction&) = delete;
  OpenTransaction& operator=(const OpenTransaction&) = delete;
  void closed() { open_ = false; }

 private:
  Connection& connection_;
  bool open_ = true;
};

class SqliteDatabase final : public Database {
 public:
  explicit SqliteDatabase(Settings settings) : settings_(std::move(settings)) {}

  // Opens `count` connections; the first switches the file to WAL, which
  // SQLite records in the file itself.
  Status open(int count) {
    for (int i = 0; i < count; ++i) {
      sqlite3* raw = nullptr;
      int rc = sqlite3_open_v2(settings_.path.c_str(), &raw,
                               SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                               nullptr);
      SqliteHandle handle(raw);
      if (rc != SQLITE_OK) {
        Error error = sqliteError(handle.get(), rc, "", settings_);
        if (error.code() != Errc::kInternal)
          return error;
        // Not "rejected the statement ''": there was none.
        return Error(Errc::kIo,
                     fmt::format("Cannot open the SQLite database {}: {}.", settings_.path,
                                 detail::oneLine(sqlite3_errstr(rc))),
                     rc);
      }
      sqlite3_extended_result_codes(handle.get(), 1);
      sqlite3_busy_timeout(handle.get(), static_cast<int>(settings_.busyTimeout.count()));
      auto connection = std::make_unique<Connection>(std::move(handle), settings_);
      if (i == 0)
        AULA_TRY_STATUS(useWal(*connection));
      AULA_TRY_STATUS(connection->run("PRAGMA synchronous = NORMAL"));
      AULA_TRY_STATUS(connection->run("PRAGMA foreign_keys = ON"));
      pool_.add(std::move(connection));
    }
    return okStatus();
  }

  Dialect dialect() const override { return Dialect::kSqlite; }

  Status transact(TxMode mode, const std::function<Status(Transaction&)>& body) override {
    auto connection = pool_.acquire();
    // IMMEDIATE takes the write lock up front: a writer waits (busy_timeout)
    // at BEGIN rather than failing when it first writes, after its reads.
    AULA_TRY_STATUS(connection->run(mode != TxMode::kRead ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED"));
    OpenTransaction open(*connection);
    SqliteTransaction tx(*connection, mode);
    Status status = body(tx);
    if (status && tx.firstError())
      status = *tx.firstError();
    if (status)
      status = connection->run("COMMIT");
    if (!status)
      connection->rollback();
    open.closed();
    return status;
  }

  Status migrate(const std::vector<Migration>& migrations) override {
    return detail::applyMigrations(*this, migrations);
  }

  Result<int> schemaVersion() override { return detail::readSchemaVersion(*this); }

  Status ping() override {
    auto connection = pool_.acquire();
    return connection->run("SELECT 1");
  }

 private:
  Status useWal(Connection& connection) {
    constexpr std::string_view kSql = "PRAGMA journal_mode = WAL";
    sqlite3_stmt* statement = AULA_TRY(connection.prepare(kSql));
    StatementReset reset(statement);
    int rc = sqlite3_step(statement);
    if (rc != SQLITE_ROW)
      return connection.error(rc, kSql);
    const auto* mode = reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
    if (mode == nullptr || std::string_view(mode) != "wal") {
      // Still correct, only slower: readers then wait for writers.
      log::warn("The SQLite database {} cannot use write-ahead logging and stays in {} mode.",
                settings_.path, mode == nullptr ? "its old" : mode);
    }
    return okStatus();
  }

  Settings settings_;
  Pool pool_;
};

}  // namespace

Result<std::unique_ptr<Database>> openSqlite(const SqliteOptions& options) {
  if (options.path.empty() || options.path == ":memory:") {
    return makeError(Errc::kInvalidArgument,
                     "The SQLite database path '{}' is not a file; name a file such as "
                     "/var/lib/aula/broker.db.",
                     options.path);
  }
  if (options.poolSize < 1) {
    return makeError(Errc::kInvalidArgument,
                     "The SQLite connection pool needs at least 1 connection, not {}.",
                     options.poolSize);
  }
  if (sqlite3_threadsafe() == 0) {
    return makeError(Errc::kInternal,
                     "This SQLite library was built without thread support, which the broker "
                     "needs.");
  }
  std::filesystem::path folder = std::filesystem::path(options.path).parent_path();
  if (folder.empty())
    folder = ".";
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) {
    return makeError(Errc::kNotFound,
                     "The folder {} for the SQLite database {} does not exist; create it or "
                     "choose another path.",
                     folder.string(), options.path);
  }
  auto database = std::make_unique<SqliteDatabase>(Settings{options.path, options.busyTimeout});
  AULA_TRY_STATUS(database->open(options.poolSize));
  return std::unique_ptr<Database>(std::move(database));
}

}  // namespace aula::broker::db
