// The broker's storage interface: SQL over SQLite (the default) or
// PostgreSQL (several brokers on one site), behind one small API so the
// broker's code and its tests are the same for both.
//
// SQL is written once, with '?' placeholders, in the subset both engines
// share: INTEGER/BIGINT ids, TEXT, integers for booleans and Unix seconds for
// times, RETURNING. Migrations may carry a statement per dialect where DDL
// differs.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::broker::db {

enum class Dialect { kSqlite, kPostgres };

// NULL, integer, real or text.
using Value = std::variant<std::monostate, std::int64_t, double, std::string>;
using Params = std::vector<Value>;

// "?, ?, ?": the placeholders of an IN list of `count` values (count > 0).
std::string placeholders(std::size_t count);

// A match against a list of ids, to follow a column: "IN (?, ?, ?)" with a
// value each on SQLite; "= ANY(CAST(? AS BIGINT[]))" with one array on
// PostgreSQL, whose text is the same for any number of ids, so that it is
// parsed and planned once per connection rather than once per length.
struct IdList {
  std::string sql;
  std::vector<Value> params;
};
IdList inIds(Dialect dialect, const std::vector<std::int64_t>& ids);

// A statement with its values, for Transaction::queryAll.
struct Statement {
  std::string sql;
  Params params;
};

class Row {
 public:
  explicit Row(std::vector<Value> columns) : columns_(std::move(columns)) {}
  std::size_t size() const { return columns_.size(); }
  bool isNull(std::size_t i) const;
  // Asserts on a wrong type (a bug in our SQL, not input).
  std::int64_t integer(std::size_t i) const;
  double real(std::size_t i) const;
  const std::string& text(std::size_t i) const;
  std::optional<std::int64_t> optInteger(std::size_t i) const;
  std::optional<std::string> optText(std::size_t i) const;
  const Value& at(std::size_t i) const { return columns_.at(i); }

 private:
  std::vector<Value> columns_;
};

// A connection inside a transaction. Errors: kAlreadyExists (a unique
// constraint), kConflict (a foreign key or check constraint; a
// serialization failure after retries), kUnavailable (the database is away),
// kInternal (bad SQL: a bug).
class Transaction {
 public:
  virtual ~Transaction() = default;
  virtual Result<std::vector<Row>> query(std::string_view sql, const Params& params = {}) = 0;
  // Returns the number of rows changed.
  virtual Result<std::int64_t> exec(std::string_view sql, const Params& params = {}) = 0;
  virtual Dialect dialect() const = 0;

  // Queues a write whose row count nobody needs (a state change, an audit
  // row): it goes with the transaction's next statement or with its COMMIT,
  // in the same round trip on PostgreSQL. If it fails, that statement or the
  // transaction fails with its error. SQLite, in-process, runs it at once.
  virtual void execLater(std::string_view sql, Params params) = 0;

  // Runs `sql` once for each set of values, in order, and returns each run's
  // rows. PostgreSQL sends them all in one round trip (pipeline mode) instead
  // of one each, which is what a batch of similar statements costs most. The
  // first error stops the runs after it and ends the transaction, as any
  // error does.
  virtual Result<std::vector<std::vector<Row>>> queryEach(std::string_view sql,
                                                          const std::vector<Params>& sets);

  // Runs different statements in order and returns each one's rows: reads
  // that do not depend on each other. PostgreSQL sends them, with the writes
  // queued before them, in one round trip instead of one each. The first
  // error ends the transaction, as any error does.
  virtual Result<std::vector<std::vector<Row>>> queryAll(const std::vector<Statement>& statements);

  // One row or kNotFound with `notFoundMessage`.
  Result<Row> queryOne(std::string_view sql, const Params& params,
                       std::string_view notFoundMessage);
  // The first column of the first row as an integer (COUNT, SUM), 0 when NULL.
  Result<std::int64_t> queryInt(std::string_view sql, const Params& params = {});
};

// A column written by the batch helpers below, with its SQL type ("BIGINT",
// "TEXT", "INTEGER") for the casts PostgreSQL needs to type a VALUES list.
struct Column {
  std::string name;
  std::string type;
};

// When the batch helpers below send their statements: at once (an error
// comes back from the call), or with the transaction's next statement
// (Transaction::execLater: an error comes back from that, or from the
// transaction).
enum class Send { kNow, kLater };

// Inserts many rows into `table`. Each row holds a value per column. On
// SQLite a multi-row INSERT per few hundred rows; on PostgreSQL one INSERT
// ... SELECT FROM unnest() of an array per column, whose text is the same for
// any number of rows (parsed and planned once per connection).
Status insertRows(Transaction& tx, std::string_view table, const std::vector<Column>& columns,
                  const std::vector<Params>& rows, Send send = Send::kNow);

// Updates many rows of `table` by `key` (a BIGINT column): each row holds
// the new value of each column, then its key. One UPDATE ... FROM unnest()
// of an array per column on PostgreSQL, where a statement costs a trip to the
// server and its planning; one UPDATE per row on SQLite, where it costs
// neither.
Status updateRows(Transaction& tx, std::string_view table, const std::vector<Column>& columns,
                  std::string_view key, const std::vector<Params>& rows, Send send = Send::kNow);

struct Migration {
  int version = 0;
  std::string name;
  std::string sqlite;    // statements separated by ';'
  std::string postgres;  // empty: same as sqlite
};

enum class TxMode {
  kRead,   // a snapshot read
  kWrite,  // serializable writes: SQLite BEGIN IMMEDIATE, PostgreSQL SERIALIZABLE with retries
  // Writes that many run at once over the same rows (a desktop's start:
  // placement over every host's load, quota sums): like kWrite, but they
  // wait for each other instead of failing and retrying. PostgreSQL takes a
  // session-level advisory lock before BEGIN, so the transaction's snapshot
  // is taken after the one before it committed, on every broker of the
  // database; SQLite's BEGIN IMMEDIATE serializes writers already.
  kExclusive,
};

// A running LISTEN: hears messages until it is destroyed.
class Subscription {
 public:
  virtual ~Subscription() = default;
};

class Database {
 public:
  virtual ~Database() = default;
  virtual Dialect dialect() const = 0;

  // Messages between the brokers that share this database (PostgreSQL's
  // NOTIFY and LISTEN). `notify` sends `payload` (at most 7,999 bytes) on
  // `channel` to every listener, the sender's own included, at once (not in
  // a transaction). `listen` calls `onMessage` on a thread of its own for
  // each message, in the order they were sent, until the Subscription goes;
  // it reconnects by itself when the server goes away, and calls `onGap`
  // (if set) when it is listening again after messages may have been missed.
  // SQLite has one broker, so there is nobody to tell: `notify` does
  // nothing and `listen` returns null.
  virtual Status notify(std::string_view channel, std::string_view payload);
  // The same for many messages, in order, in one round trip.
  virtual Status notifyEach(std::string_view channel, const std::vector<std::string>& payloads);
  virtual Result<std::unique_ptr<Subscription>> listen(
      std::string channel, std::function<void(std::string_view payload)> onMessage,
      std::function<void()> onGap = {});

  // Runs `body` in a transaction and commits if it returns ok, else rolls
  // back. A PostgreSQL serialization failure or deadlock runs `body` again (a
  // few times), so `body` must have no effect outside the database.
  virtual Status transact(TxMode mode, const std::function<Status(Transaction&)>& body) = 0;

  // Applies the migrations newer than the stored schema version, each in its
  // own transaction. Refuses (kConfig) a database whose version is newer than
  // the newest migration: that database belongs to a newer broker.
  virtual Status migrate(const std::vector<Migration>& migrations) = 0;
  virtual Result<int> schemaVersion() = 0;

  // A cheap round trip, for /healthz.
  virtual Status ping() = 0;

  template <typename T>
  Result<T> transactValue(TxMode mode, const std::function<Result<T>(Transaction&)>& body) {
    std::optional<T> out;
    auto status = transact(mode, [&](Transaction& tx) -> Status {
      auto r = body(tx);
      if (!r)
        return std::move(r).error();
      out = std::move(r).value();
      return {};
    });
    if (!status)
      return std::move(status).error();
    return std::move(*out);
  }
};

struct SqliteOptions {
  std::string path;  // file; ":memory:" is refused (each connection would get its own)
  int poolSize = 8;
  std::chrono::milliseconds busyTimeout{10000};
};

struct PostgresOptions {
  std::string conninfo;  // libpq: "host=/tmp/x port=5432 dbname=aula user=aula"
  int poolSize = 8;
  std::chrono::milliseconds connectTimeout{5000};
};

Result<std::unique_ptr<Database>> openSqlite(const SqliteOptions& options);
Result<std::unique_ptr<Database>> openPostgres(const PostgresOptions& options);

}  // namespace aula::broker::db
