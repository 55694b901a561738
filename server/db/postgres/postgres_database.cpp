// The PostgreSQL adapter: a pool of libpq connections, '?' placeholders
// rewritten to $n, SERIALIZABLE writes retried on serialization failures, and
// connections dropped and reopened when the server goes away and comes back.
#include <algorithm>
#include <cassert>
#include <cctype>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "aula/broker/database.hpp"
#include "aula/common/callback_guard.hpp"
#include "aula/common/file.hpp"
#include "aula/common/log.hpp"

#include "db/database_internal.hpp"

namespace aula::broker::db {
namespace {

struct ConnectionCloser {
  void operator()(PGconn* connection) const { PQfinish(connection); }
};
struct ResultClearer {
  void operator()(PGresult* result) const { PQclear(result); }
};
struct ConninfoFree {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};
using ConnectionHandle = std::unique_ptr<PGconn, ConnectionCloser>;
using ResultHandle = std::unique_ptr<PGresult, ResultClearer>;
using ConninfoHandle = std::unique_ptr<PQconninfoOption, ConninfoFree>;

// Type OIDs from pg_type.h, which libpq does not install.
constexpr Oid kBoolOid = 16;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;
constexpr Oid kFloat4Oid = 700;
constexpr Oid kFloat8Oid = 701;
constexpr Oid kNumericOid = 1700;

// Eight writers on one row need up to 8 runs now and then (measured): a
// retried body competes with fresh ones that do not wait, so the tail is long.
// 20 makes running out rare even on a loaded machine, and bounds the wait at
// about a second, after which conflicting is better reported than retried.
constexpr int kMaxAttempts = 20;

struct Settings {
  std::string conninfo;
  std::string address;  // "127.0.0.1:5432", for messages; never the password
  std::chrono::milliseconds connectTimeout;
  int poolSize;
};

// How a statement failed, beyond its Error.
enum class Failure { kNone, kRetry, kBroken, kOther };

// libpq's messages span lines ("...\n\tIs the server running...?"); the first
// says what happened.
std::string firstLine(const char* text) {
  if (text == nullptr)
    return "no reason given";
  std::string_view view(text);
  auto end = view.find('\n');
  std::string line = detail::oneLine(view.substr(0, end));
  return line.empty() ? std::string("no reason given") : line;
}

Error unreachable(const Settings& settings, std::string_view reason) {
  return makeError(Errc::kUnavailable, "The database at {} is not reachable: {}.", settings.address,
                   reason);
}

Error tooBusy() {
  return Error(Errc::kConflict, "The database was too busy to finish this change; try again.");
}

void logNotice(void* /*unused*/, const char* message) noexcept {
  guardCallback("libpq's notice processor", [&] {
    log::debug("PostgreSQL says: {}", detail::oneLine(message == nullptr ? "" : message));
  });
}

// Rewrites '?' to $1..$n outside literals, quoted names and comments; returns
// how many there were.
std::size_t rewritePlaceholders(std::string_view sql, std::string* out) {
  out->clear();
  out->reserve(sql.size() + 16);
  std::size_t count = 0;
  std::size_t i = 0;
  auto copyThrough = [&](std::string_view terminator) {
    auto end = sql.find(terminator, i);
    end = end == std::string_view::npos ? sql.size() : end + terminator.size();
    out->append(sql.substr(i, end - i));
    i = end;
  };
  while (i < sql.size()) {
    const char c = sql[i];
    const std::string_view rest = sql.substr(i);
    if (c == '?') {
      *out += fmt::format("${}", ++count);
      ++i;
    } else if (c == '\'') {
      // E'...' strings escape with backslashes; plain ones only by doubling,
      // which reads as two adjacent literals here and needs no special case.
      const bool escapes = i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e');
      out->push_back(c);
      ++i;
      while (i < sql.size() && sql[i] != '\'') {
        if (escapes && sql[i] == '\\' && i + 1 < sql.size())
          out->push_back(sql[i++]);
        out->push_back(sql[i++]);
      }
      if (i < sql.size())
        out->push_back(sql[i++]);
    } else if (c == '"') {
      out->push_back(c);
      ++i;
      copyThrough("\"");
    } else if (rest.starts_with("--")) {
      copyThrough("\n");
    } else if (rest.starts_with("/*")) {
      out->append("/*");
      i += 2;
      copyThrough("*/");
    } else {
      out->push_back(c);
      ++i;
    }
  }
  return count;
}

std::string floatText(double value) {
  if (std::isnan(value))
    return "NaN";
  if (std::isinf(value))
    return value > 0 ? "Infinity" : "-Infinity";
  // The shortest text that reads back as the same double.
  return fmt::format("{}", value);
}

Value columnValue(const PGresult* result, int row, int column, Oid type) {
  if (PQgetisnull(result, row, column) != 0)
    return std::monostate{};
  const char* text = PQgetvalue(result, row, column);
  const auto size = static_cast<std::size_t>(PQgetlength(result, row, column));
  switch (type) {
    case kInt2Oid:
    case kInt4Oid:
    case kInt8Oid: {
      std::int64_t whole = 0;
      std::from_chars(text, text + size, whole);
      return whole;
    }
    case kBoolOid:
      return std::int64_t{text[0] == 't' ? 1 : 0};
    case kFloat4Oid:
    case kFloat8Oid:
    case kNumericOid: {
      // from_chars reads "Infinity" and "NaN" too, and ignores the locale.
      double real = 0;
      std::from_chars(text, text + size, real);
      return real;
    }
    default:
      return std::string(text, size);
  }
}

class Connection {
 public:
  Connection(ConnectionHandle handle, const Settings& settings)
      : handle_(std::move(handle)), settings_(settings) {}

  bool broken() const { return broken_ || PQstatus(handle_.get()) != CONNECTION_OK; }
  void markBroken() { broken_ = true; }
  PGconn* raw() const { return handle_.get(); }

  // Runs one statement. On failure, `failure` says whether to retry the
  // transaction or drop the connection.
  Result<ResultHandle> execute(std::string_view sql, const Params& params, Failure* failure) {
    *failure = Failure::kNone;
    std::string text;
    const std::size_t count = rewritePlaceholders(sql, &text);
    AULA_TRY_STATUS(checkCount(sql, count, params.size(), failure));
    const BoundValues bound(params);
    const auto given = static_cast<int>(params.size());
    const Preparation plan = preparation(text, bound, false);
    if (plan.prepare) {
      ResultHandle prepared(
          PQprepare(handle_.get(), plan.name.c_str(), text.c_str(), given, bound.types.data()));
      if (prepared == nullptr || PQresultStatus(prepared.get()) != PGRES_COMMAND_OK)
        return classify(prepared.get(), sql, failure);
      prepared_.emplace(plan.key, plan.name);
    }
    ResultHandle result(!plan.name.empty()
                            ? PQexecPrepared(handle_.get(), plan.name.c_str(), given,
                                             bound.values.data(), nullptr, nullptr, 0)
                            : PQexecParams(handle_.get(), text.c_str(), given, bound.types.data(),
                                           bound.values.data(), nullptr, nullptr, 0));
    const ExecStatusType status =
        result == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(result.get());
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
      return result;
    return classify(result.get(), sql, failure);
  }

  // Runs one statement once per set of values in one round trip: libpq's
  // pipeline mode sends them all, then a Sync, then reads every result. After
  // the first error the server skips the rest (PGRES_PIPELINE_ABORTED).
  Result<std::vector<ResultHandle>> executeEach(std::string_view sql,
                                                const std::vector<Params>& sets, Failure* failure) {
    *failure = Failure::kNone;
    std::string text;
    const std::size_t count = rewritePlaceholders(sql, &text);
    for (const auto& params : sets)
      AULA_TRY_STATUS(checkCount(sql, count, params.size(), failure));
    PGconn* conn = handle_.get();
    if (PQenterPipelineMode(conn) != 1)
      return lost(sql, failure);
    for (const auto& params : sets) {
      const BoundValues bound(params);
      if (PQsendQueryParams(conn, text.c_str(), static_cast<int>(params.size()), bound.types.data(),
                            bound.values.data(), nullptr, nullptr, 0) != 1) {
        return lost(sql, failure);
      }
    }
    if (PQpipelineSync(conn) != 1)
      return lost(sql, failure);
    std::vector<ResultHandle> out;
    out.reserve(sets.size());
    std::optional<Error> first;
    // Each statement's results end with a null; the Sync's result ends all.
    for (std::size_t i = 0; i < sets.size(); ++i) {
      while (PGresult* raw = PQgetResult(conn)) {
        ResultHandle result(raw);
        const ExecStatusType status = PQresultStatus(raw);
        if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
          out.push_back(std::move(result));
        } else if (status != PGRES_PIPELINE_ABORTED && !first) {
          first = classify(raw, sql, failure);
        }
      }
    }
    ResultHandle sync(PQgetResult(conn));
    if (sync == nullptr || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC ||
        PQexitPipelineMode(conn) != 1) {
      return lost(sql, failure);
    }
    if (first)
      return *std::move(first);
    if (out.size() != sets.size())
      return lost(sql, failure);
    return out;
  }

  // One statement of a pipeline.
  struct Step {
    std::string sql;
    Params params;
  };

  // What a pipeline gave back: each step's result (null after an error), and
  // the first error with the index of its step.
  struct Piped {
    std::vector<ResultHandle> results;
    std::optional<Error> error;
    std::size_t failedAt = 0;
  };

  // Runs `steps` in order in one round trip (pipeline mode), each followed by
  // a Sync of its own, so that each runs as if sent alone: a lock one takes is
  // held before the next starts, and the steps after an error still run
  // (inside a transaction that error aborted they fail too, and its COMMIT
  // rolls back). An error here is a connection that could not carry the
  // pipeline; the statements' own errors are in Piped.
  Result<Piped> pipeline(const std::vector<Step>& steps, Failure* failure) {
    *failure = Failure::kNone;
    // Each step's text with $1..$n, checked against its values before
    // anything is sent.
    std::vector<std::string> texts(steps.size());
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const std::size_t count = rewritePlaceholders(steps[i].sql, &texts[i]);
      AULA_TRY_STATUS(checkCount(steps[i].sql, count, steps[i].params.size(), failure));
    }
    PGconn* conn = handle_.get();
    if (PQenterPipelineMode(conn) != 1)
      return lost(steps.front().sql, failure);
    // The statements this pipeline prepares: a statement twice in it is
    // prepared once.
    std::vector<Preparation> plans(steps.size());
    std::unordered_map<std::string, std::string> preparing;
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const std::string& text = texts[i];
      const BoundValues bound(steps[i].params);
      const auto given = static_cast<int>(steps[i].params.size());
      auto& plan = plans[i];
      plan = preparation(text, bound, true);
      if (plan.prepare) {
        auto [it, first] = preparing.emplace(plan.key, plan.name);
        plan.prepare = first;
        plan.name = it->second;
      }
      bool sent = true;
      if (plan.prepare) {
        sent = PQsendPrepare(conn, plan.name.c_str(), text.c_str(), given, bound.types.data()) == 1;
      }
      if (sent) {
        sent = plan.name.empty()
                   ? PQsendQueryParams(conn, text.c_str(), given, bound.types.data(),
                                       bound.values.data(), nullptr, nullptr, 0) == 1
                   : PQsendQueryPrepared(conn, plan.name.c_str(), given, bound.values.data(),
                                         nullptr, nullptr, 0) == 1;
      }
      if (!sent || PQpipelineSync(conn) != 1)
        return lost(steps[i].sql, failure);
    }
    Piped out;
    out.results.resize(steps.size());
    auto fail = [&](std::size_t i, const PGresult* raw) {
      if (!out.error) {
        out.error = classify(raw, steps[i].sql, failure);
        out.failedAt = i;
      }
    };
    // Each command's results end with a null, each Sync with its own result.
    for (std::size_t i = 0; i < steps.size(); ++i) {
      if (plans[i].prepare) {
        ResultHandle prepared(PQgetResult(conn));
        if (prepared == nullptr)
          return lost(steps[i].sql, failure);
        if (PQresultStatus(prepared.get()) == PGRES_COMMAND_OK) {
          prepared_.emplace(plans[i].key, plans[i].name);
        } else {
          fail(i, prepared.get());
        }
        if (PQgetResult(conn) != nullptr)
          return lost(steps[i].sql, failure);
      }
      while (PGresult* raw = PQgetResult(conn)) {
        ResultHandle result(raw);
        const ExecStatusType status = PQresultStatus(raw);
        if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
          out.results[i] = std::move(result);
        } else if (status != PGRES_PIPELINE_ABORTED) {
          fail(i, raw);
        }
      }
      ResultHandle sync(PQgetResult(conn));
      if (sync == nullptr || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC)
        return lost(steps[i].sql, failure);
    }
    if (PQexitPipelineMode(conn) != 1)
      return lost(steps.back().sql, failure);
    return out;
  }

 private:
  // The values of one statement as libpq takes them. Typed integers and reals
  // keep `SELECT ?` an integer, as in SQLite; text stays untyped so that
  // PostgreSQL infers the column's type.
  struct BoundValues {
    explicit BoundValues(const Params& params)
        : storage(params.size()), values(params.size(), nullptr), types(params.size(), 0) {
      for (std::size_t i = 0; i < params.size(); ++i) {
        if (const auto* whole = std::get_if<std::int64_t>(&params[i])) {
          storage[i] = std::to_string(*whole);
          types[i] = kInt8Oid;
        } else if (const auto* real = std::get_if<double>(&params[i])) {
          storage[i] = floatText(*real);
          types[i] = kFloat8Oid;
        } else if (const auto* string = std::get_if<std::string>(&params[i])) {
          values[i] = string->c_str();
          continue;
        } else {
          continue;  // NULL
        }
        values[i] = storage[i].c_str();
      }
    }
    std::vector<std::string> storage;
    std::vector<const char*> values;
    std::vector<Oid> types;
  };

  static Status checkCount(std::string_view sql, std::size_t expected, std::size_t given,
                           Failure* failure) {
    if (expected == given)
      return {};
    *failure = Failure::kOther;
    return makeError(Errc::kInternal, "The SQL statement '{}' takes {} values but was given {}.",
                     detail::sqlExcerpt(sql), expected, given);
  }

  // How to run `text` on this connection: by the name it was prepared under,
  // prepared now (`prepare`) on its second run, or on its first in a
  // pipeline, where preparing costs no round trip of its own; or unprepared
  // (no name).
  // PostgreSQL then parses each statement once per connection instead of once
  // per run, and plans it once when a generic plan serves as well as a fresh
  // one. The parameter types are part of the key: a NULL leaves its type open.
  // The caller records a statement it prepared in prepared_.
  struct Preparation {
    std::string key;
    std::string name;  // empty: unprepared
    bool prepare = false;
  };
  Preparation preparation(const std::string& text, const BoundValues& bound, bool piped) {
    if (!worthPreparing(text))
      return {};
    Preparation out;
    out.key = text;
    out.key.push_back('\0');
    out.key.append(reinterpret_cast<const char*>(bound.types.data()),
                   bound.types.size() * sizeof(Oid));
    if (auto it = prepared_.find(out.key); it != prepared_.end()) {
      out.name = it->second;
      return out;
    }
    // Alone, preparing costs a round trip of its own: only for a statement
    // this connection has run before, which it will most likely run again.
    if (prepared_.size() >= kMaxPrepared || (!piped && seen_.insert(out.key).second)) {
      if (seen_.size() > kMaxSeen)
        seen_.clear();
      return {};
    }
    out.name = fmt::format("aula_{}", ++named_);
    out.prepare = true;
    return out;
  }

  // Only single data statements: transaction control, LISTEN and the schema's
  // scripts run as they are. Long texts are the batch statements whose text
  // grows with their rows; each size would be a statement of its own.
  static bool worthPreparing(std::string_view text) {
    if (text.size() > kMaxPreparedText || text.find(';') != std::string_view::npos)
      return false;
    for (std::string_view verb : {"SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WITH "}) {
      if (text.size() >= verb.size() &&
          std::equal(verb.begin(), verb.end(), text.begin(), [](char a, char b) {
            return a == std::toupper(static_cast<unsigned char>(b));
          }))
        return true;
    }
    return false;
  }

  // A pipeline that libpq could not send or read whole leaves the connection
  // in a state nobody should reuse.
  Error lost(std::string_view sql, Failure* failure) {
    broken_ = true;
    *failure = Failure::kBroken;
    if (PQstatus(handle_.get()) != CONNECTION_OK)
      return unreachable(settings_, firstLine(PQerrorMessage(handle_.get())));
    return makeError(Errc::kInternal, "Running '{}' as a batch failed: {}", detail::sqlExcerpt(sql),
                     firstLine(PQerrorMessage(handle_.get())));
  }

  Error classify(const PGresult* result, std::string_view sql, Failure* failure) {
    const char* field = result == nullptr ? nullptr : PQresultErrorField(result, PG_DIAG_SQLSTATE);
    const std::string_view state = field == nullptr ? std::string_view() : field;
    const char* primaryField =
        result == nullptr ? nullptr : PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
    const std::string primary =
        firstLine(primaryField != nullptr ? primaryField : PQerrorMessage(handle_.get()));

    if (PQstatus(handle_.get()) != CONNECTION_OK || state.starts_with("08") || state == "57P01" ||
        state == "57P02" || state == "57P03") {
      broken_ = true;
      *failure = Failure::kBroken;
      return unreachable(settings_, primary);
    }
    *failure = Failure::kOther;
    if (state == "40001" || state == "40P01") {
      *failure = Failure::kRetry;
      return tooBusy();
    }
    if (state == "23505") {
      return Error(Errc::kAlreadyExists,
                   fmt::format("A record with the same unique value already exists: {}.", primary));
    }
    if (state == "23503" || state == "23514" || state == "23502" || state == "23P01") {
      return Error(Errc::kConflict,
                   fmt::format("The change breaks a rule of the database: {}.", primary));
    }
    if (state == "57014") {
      return makeError(Errc::kTimeout, "The database stopped the statement '{}': {}.",
                       detail::sqlExcerpt(sql), primary);
    }
    if (state.starts_with("53")) {
      return makeError(Errc::kUnavailable,
                       "The database at {} is short of resources ({}); try again later.",
                       settings_.address, primary);
    }
    return makeError(Errc::kInternal, "PostgreSQL rejected the statement '{}': {} (SQLSTATE {}).",
                     detail::sqlExcerpt(sql), primary, state.empty() ? "none" : state);
  }

  static constexpr std::size_t kMaxPrepared = 256;
  static constexpr std::size_t kMaxPreparedText = 4096;
  static constexpr std::size_t kMaxSeen = 1024;

  ConnectionHandle handle_;
  const Settings& settings_;
  bool broken_ = false;
  std::unordered_map<std::string, std::string> prepared_;  // text and types -> name
  std::unordered_set<std::string> seen_;                   // run once, unprepared
  std::size_t named_ = 0;                                  // statements prepared so far
};

class Pool {
 public:
  explicit Pool(const Settings& settings) : settings_(settings) {}

  // Borrows a connection and gives it back, or drops it when broken, when it
  // goes out of scope.
  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Connection> connection, bool fresh)
        : pool_(pool), connection_(std::move(connection)), fresh_(fresh) {}
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (connection_)
        pool_->giveBack(std::move(connection_));
    }
    Connection& operator*() const { return *connection_; }
    Connection* operator->() const { return connection_.get(); }
    // Opened for this lease, rather than reused from the pool.
    bool fresh() const { return fresh_; }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> connection_;
    bool fresh_;
  };

  Result<Lease> acquire() {
    std::unique_lock lock(mutex_);
    available_.wait(lock, [&] { return !idle_.empty() || open_ < settings_.poolSize; });
    if (!idle_.empty()) {
      auto connection = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(connection), false);
    }
    ++open_;
    lock.unlock();
    auto connection = connect();
    if (!connection) {
      lock.lock();
      --open_;
      lock.unlock();
      available_.notify_one();
      return std::move(connection).error();
    }
    return Lease(this, std::move(connection).value(), true);
  }

  // Closes every idle connection: after one turned out dead, the others,
  // opened to the same server, most likely are too.
  void dropIdle() {
    std::vector<std::unique_ptr<Connection>> dropped;
    {
      std::lock_guard lock(mutex_);
      dropped.swap(idle_);
      open_ -= static_cast<int>(dropped.size());
    }
    available_.notify_all();
  }

  Result<std::unique_ptr<Connection>> connect() {
    const auto seconds = std::max<std::int64_t>(
        1, (settings_.connectTimeout.count() + 999) / 1000);  // libpq counts whole seconds
    const std::string timeout = std::to_string(seconds);
    // expand_dbname makes the first "dbname" the whole connection string;
    // keys after it override what the string says.
    const char* const keys[] = {"dbname", "connect_timeout", nullptr};
    const char* const values[] = {settings_.conninfo.c_str(), timeout.c_str(), nullptr};
    ConnectionHandle handle(PQconnectdbParams(keys, values, 1));
    if (handle == nullptr)
      return unreachable(settings_, "libpq could not allocate a connection");
    if (PQstatus(handle.get()) != CONNECTION_OK) {
      return unreachable(settings_, firstLine(PQerrorMessage(handle.get())));
    }
    // Notices ("relation already exists, skipping") would go to stderr.
    PQsetNoticeProcessor(handle.get(), logNotice, nullptr);
    // The broker's statements look rows up by keys and id lists: one plan
    // serves every value, and a statement prepared on this connection is
    // planned once instead of at each of its first five runs (planning a
    // join costs more than running it). A server that does not know the
    // setting (before PostgreSQL 12) plans as it always did.
    ResultHandle generic(PQexec(handle.get(), "SET plan_cache_mode = force_generic_plan"));
    if (generic == nullptr || PQresultStatus(generic.get()) != PGRES_COMMAND_OK) {
      log::info("PostgreSQL plans each statement as it runs: {}",
                firstLine(PQerrorMessage(handle.get())));
    }
    return std::make_unique<Connection>(std::move(handle), settings_);
  }

 private:
  void giveBack(std::unique_ptr<Connection> connection) {
    {
      std::lock_guard lock(mutex_);
      if (connection->broken()) {
        --open_;
      } else {
        idle_.push_back(std::move(connection));
      }
    }
    available_.notify_one();
    // A broken connection, if any, is closed here, outside the lock.
  }

  const Settings& settings_;
  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Connection>> idle_;
  int open_ = 0;  // idle and lent out
};

// The key of the advisory lock that kExclusive transactions take: "aula" in
// ASCII, so that it is recognisable in pg_locks.
constexpr std::int64_t kExclusiveLockKey = 0x61756c61;  // 1635085409

constexpr std::string_view kBeginWrite = "BEGIN ISOLATION LEVEL SERIALIZABLE";
constexpr std::string_view kBeginRead = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

// A transaction on one connection, in as few round trips as it can: its
// opening (BEGIN, after the advisory lock for kExclusive) goes with its first
// statement, and the writes queued by execLater with the statement after them
// or with the COMMIT (and the lock's release). A read and a write cost two
// round trips, not five; a transaction that ran nothing costs none.
class PgTransaction final : public Transaction {
 public:
  using Step = Connection::Step;

  PgTransaction(Connection& connection, TxMode mode)
      : connection_(connection), exclusive_(mode == TxMode::kExclusive) {
    // kExclusive waits for the lock before BEGIN, so that its snapshot is
    // taken after the transaction before it committed.
    if (exclusive_)
      pending_.push_back({"SELECT pg_advisory_lock(?)", {kExclusiveLockKey}});
    pending_.push_back({std::string(mode == TxMode::kRead ? kBeginRead : kBeginWrite), {}});
  }
  // A body that threw leaves its transaction open: it ends here, so that the
  // connection goes back to the pool clean.
  ~PgTransaction() override {
    if (open_)
      guardCallback("rolling back a PostgreSQL transaction", [this] { rollback(); });
  }
  PgTransaction(const PgTransaction&) = delete;
  PgTransaction& operator=(const PgTransaction&) = delete;

  Result<std::vector<Row>> query(std::string_view sql, const Params& params) override {
    auto result = AULA_TRY(run(sql, params));
    return rowsOf(result.get());
  }

  static std::vector<Row> rowsOf(const PGresult* result) {
    const int rowCount = PQntuples(result);
    const int columnCount = PQnfields(result);
    std::vector<Oid> types(static_cast<std::size_t>(columnCount));
    for (int c = 0; c < columnCount; ++c)
      types[static_cast<std::size_t>(c)] = PQftype(result, c);
    std::vector<Row> rows;
    rows.reserve(static_cast<std::size_t>(rowCount));
    for (int r = 0; r < rowCount; ++r) {
      std::vector<Value> columns;
      columns.reserve(types.size());
      for (int c = 0; c < columnCount; ++c) {
        columns.push_back(columnValue(result, r, c, types[static_cast<std::size_t>(c)]));
      }
      rows.emplace_back(std::move(columns));
    }
    return rows;
  }

  Result<std::int64_t> exec(std::string_view sql, const Params& params) override {
    auto result = AULA_TRY(run(sql, params));
    const char* changed = PQcmdTuples(result.get());
    std::int64_t count = 0;
    if (changed != nullptr)
      std::from_chars(changed, changed + std::strlen(changed), count);
    return count;
  }

  void execLater(std::string_view sql, Params params) override {
    pending_.push_back({std::string(sql), std::move(params)});
  }

  Result<std::vector<std::vector<Row>>> queryEach(std::string_view sql,
                                                  const std::vector<Params>& sets) override {
    if (sets.empty())
      return std::vector<std::vector<Row>>();
    if (!pending_.empty()) {
      auto piped = send({});
      if (!piped || piped->error)
        return *firstError_;
    }
    Failure failure = Failure::kNone;
    auto results = connection_.executeEach(sql, sets, &failure);
    if (!results) {
      note(results.error(), failure);
      return *firstError_;
    }
    std::vector<std::vector<Row>> out;
    out.reserve(results->size());
    for (const auto& result : *results)
      out.push_back(rowsOf(result.get()));
    return out;
  }

  Result<std::vector<std::vector<Row>>> queryAll(
      const std::vector<Statement>& statements) override {
    if (statements.empty())
      return std::vector<std::vector<Row>>();
    std::vector<Step> steps;
    steps.reserve(statements.size());
    for (const auto& s : statements)
      steps.push_back({s.sql, s.params});
    auto piped = send(std::move(steps));
    if (!piped || piped->error)
      return *firstError_;
    // The queued writes' results come first.
    const auto& results = piped->results;
    std::vector<std::vector<Row>> out;
    out.reserve(statements.size());
    for (std::size_t i = results.size() - statements.size(); i < results.size(); ++i)
      out.push_back(rowsOf(results[i].get()));
    return out;
  }

  Dialect dialect() const override { return Dialect::kPostgres; }

  const std::optional<Error>& firstError() const { return firstError_; }
  bool shouldRetry() const { return retry_; }
  // The connection was found dead when the transaction began on it.
  bool lostAtOpening() const { return lostAtOpening_; }

  // Sends the queued writes, COMMIT and the lock's release. Ok: committed.
  // Either way the transaction has ended (a failed COMMIT rolls back).
  Status commit() {
    if (!open_ && pending_.size() == (exclusive_ ? 2U : 1U))
      return {};  // nothing ran, nothing was queued
    std::vector<Step> closing{{"COMMIT", {}}};
    if (exclusive_)
      closing.push_back({"SELECT pg_advisory_unlock(?)", {kExclusiveLockKey}});
    const std::size_t commitAt = pending_.size();
    auto piped = send(std::move(closing));
    open_ = false;
    if (!piped)
      return std::move(piped).error();
    if (piped->error && piped->failedAt <= commitAt)
      return *piped->error;
    if (piped->error) {
      // Committed, but the lock is still held: ending the session lets go.
      log::warn("Releasing a PostgreSQL advisory lock failed; closing its connection. {}",
                piped->error->message());
      connection_.markBroken();
    }
    return {};
  }

  // Rolls back what was sent, and lets go of the lock; a connection that
  // cannot is not reused (closing it ends both).
  void rollback() {
    pending_.clear();
    if (!open_)
      return;
    open_ = false;
    if (connection_.broken())
      return;
    std::vector<Step> steps{{"ROLLBACK", {}}};
    if (exclusive_)
      steps.push_back({"SELECT pg_advisory_unlock(?)", {kExclusiveLockKey}});
    Failure failure = Failure::kNone;
    auto piped = connection_.pipeline(steps, &failure);
    if (!piped || piped->error) {
      connection_.markBroken();
      log::warn("Rolling back a PostgreSQL transaction failed. {}",
                (piped ? *piped->error : piped.error()).message());
    }
  }

 private:
  Result<ResultHandle> run(std::string_view sql, const Params& params) {
    if (pending_.empty()) {
      Failure failure = Failure::kNone;
      auto result = connection_.execute(sql, params, &failure);
      if (!result) {
        note(result.error(), failure);
        return *firstError_;
      }
      return result;
    }
    auto piped = send({{std::string(sql), params}});
    if (!piped || piped->error)
      return *firstError_;
    return std::move(piped->results.back());
  }

  // Sends what is queued, then `more`, in one round trip, and notes the
  // first error.
  Result<Connection::Piped> send(std::vector<Step> more) {
    std::vector<Step> steps;
    steps.swap(pending_);
    std::move(more.begin(), more.end(), std::back_inserter(steps));
    const bool opening = !open_;
    open_ = true;
    Failure failure = Failure::kNone;
    auto piped = connection_.pipeline(steps, &failure);
    if (!piped || piped->error) {
      note(piped ? *piped->error : piped.error(), failure);
      lostAtOpening_ = lostAtOpening_ || (opening && failure == Failure::kBroken);
    }
    return piped;
  }

  // PostgreSQL ends a transaction at its first error; everything after
  // fails ("current transaction is aborted"), so the first error is the one
  // worth reporting, by every statement after it too.
  void note(const Error& error, Failure failure) {
    if (!firstError_)
      firstError_ = error;
    retry_ = retry_ || failure == Failure::kRetry;
  }

  Connection& connection_;
  const bool exclusive_;
  std::vector<Step> pending_;  // the opening until sent, then queued writes
  bool open_ = false;          // the opening was sent: a transaction (and lock) may be held
  std::optional<Error> firstError_;
  bool retry_ = false;
  bool lostAtOpening_ = false;
};

void backOff(int attempt) {
  thread_local std::minstd_rand random{std::random_device{}()};
  // Random, so that the writers that collided do not collide again; growing,
  // so that a crowd thins out.
  const int ceiling = std::min(2 << attempt, 100);
  std::uniform_int_distribution<int> milliseconds(1, ceiling);
  std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds(random)));
}

// A LISTEN on a connection of its own, on a thread that waits for the
// server's messages or for the stop signal, whichever comes first, and
// reconnects (with a growing pause, up to 5 s) when the server went away.
class PgSubscription final : public Subscription {
 public:
  PgSubscription(Pool& pool, const Settings& settings, std::string channel,
                 std::function<void(std::string_view)> onMessage, std::function<void()> onGap)
      : pool_(pool),
        settings_(settings),
        channel_(std::move(channel)),
        onMessage_(std::move(onMessage)),
        onGap_(std::move(onGap)) {}

  ~PgSubscription() override {
    const std::uint64_t one = 1;
    if (stop_.valid()) {
      auto written = ::write(stop_.get(), &one, sizeof one);
      (void)written;
    }
    if (thread_.joinable())
      thread_.join();
  }
  PgSubscription(const PgSubscription&) = delete;
  PgSubscription& operator=(const PgSubscription&) = delete;

  // Listens once before returning, so that a message sent after start()
  // is heard, and a database that is away fails here.
  Status start() {
    stop_ = file::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_.valid())
      return makeError(Errc::kInternal, "eventfd failed: {}.", std::strerror(errno));
    connection_ = AULA_TRY(subscribe());
    thread_ = std::thread([this] { run(); });
    return okStatus();
  }

 private:
  Result<std::unique_ptr<Connection>> subscribe() {
    auto connection = AULA_TRY(pool_.connect());
    Failure failure = Failure::kNone;
    AULA_TRY(connection->execute(fmt::format("LISTEN \"{}\"", channel_), {}, &failure));
    return connection;
  }

  // Waits for the socket (or nothing: -1) or the stop signal for up to
  // `timeout` ms; false when it is time to stop.
  bool wait(int socket, int timeout) const {
    pollfd fds[2] = {{.fd = stop_.get(), .events = POLLIN, .revents = 0},
                     {.fd = socket, .events = POLLIN, .revents = 0}};
    const int n = ::poll(fds, socket >= 0 ? 2 : 1, timeout);
    return !(n > 0 && (fds[0].revents & POLLIN) != 0);
  }

  void run() {
    int pause = 100;
    while (true) {
      if (!connection_) {
        if (!wait(-1, pause))
          return;
        auto again = subscribe();
        if (!again) {
          if (pause == 100)
            log::warn("Not hearing the other brokers' events: {} Trying again.",
                      again.error().message());
          pause = std::min(pause * 2, 5000);
          continue;
        }
        connection_ = std::move(again).value();
        pause = 100;
        if (onGap_)
          guardCallback("the PostgreSQL listener's gap handler", onGap_);
      }
      PGconn* raw = connection_->raw();
      if (!wait(PQsocket(raw), -1))
        return;
      if (PQconsumeInput(raw) == 0) {
        log::warn("Lost the connection that hears the other brokers' events ({}): {}.",
                  settings_.address, firstLine(PQerrorMessage(raw)));
        connection_.reset();
        continue;
      }
      while (PGnotify* note = PQnotifies(raw)) {
        std::string payload = note->extra == nullptr ? std::string() : std::string(note->extra);
        PQfreemem(note);
        guardCallback("the PostgreSQL listener's message handler", [&] { onMessage_(payload); });
      }
    }
  }

  Pool& pool_;
  const Settings& settings_;
  std::string channel_;
  std::function<void(std::string_view)> onMessage_;
  std::function<void()> onGap_;
  file::UniqueFd stop_;
  std::unique_ptr<Connection> connection_;
  std::thread thread_;
};

// A channel name is an identifier: letters, digits and '_', so that it
// needs no quoting rules beyond double quotes.
Status checkChannel(std::string_view channel) {
  const bool valid = !channel.empty() && channel.size() < 64 &&
                     std::all_of(channel.begin(), channel.end(), [](char c) {
                       return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                     });
  if (!valid) {
    return makeError(Errc::kInvalidArgument,
                     "'{}' is not a channel name: use 1 to 63 lower-case letters, digits and '_'.",
                     channel);
  }
  return okStatus();
}

class PostgresDatabase final : public Database {
 public:
  explicit PostgresDatabase(Settings settings) : settings_(std::move(settings)), pool_(settings_) {}

  // Connects once, so that a wrong address or database fails at start-up.
  Status open() {
    auto lease = AULA_TRY(pool_.acquire());
    return okStatus();
  }

  Dialect dialect() const override { return Dialect::kPostgres; }

  Status transact(TxMode mode, const std::function<Status(Transaction&)>& body) override {
    int stale = 0;
    for (int attempt = 0; attempt < kMaxAttempts;) {
      auto lease = AULA_TRY(pool_.acquire());
      PgTransaction tx(*lease, mode);
      Status status = body(tx);
      if (status && tx.firstError())
        status = *tx.firstError();
      if (status) {
        status = tx.commit();
      } else {
        tx.rollback();
      }
      if (status)
        return okStatus();
      // A pooled connection that the server dropped meanwhile (a restart):
      // the other idle ones most likely went with it. Again, on a new one.
      if (tx.lostAtOpening() && !lease.fresh() && stale++ < settings_.poolSize) {
        pool_.dropIdle();
        continue;
      }
      if (!tx.shouldRetry())
        return status;
      if (++attempt < kMaxAttempts) {
        log::debug("A PostgreSQL transaction met a concurrent one; running it again (attempt {}).",
                   attempt + 1);
        backOff(attempt);
      }
    }
    return tooBusy();
  }

  Status migrate(const std::vector<Migration>& migrations) override {
    return detail::applyMigrations(*this, migrations);
  }

  Result<int> schemaVersion() override { return detail::readSchemaVersion(*this); }

  Status ping() override {
    auto lease = AULA_TRY(leaseAndRun("SELECT 1"));
    return okStatus();
  }

  Status notify(std::string_view channel, std::string_view payload) override {
    return notifyEach(channel, {std::string(payload)});
  }

  // One pipeline: its statements run in one implicit transaction, so the
  // listeners hear all the messages at once, in order.
  Status notifyEach(std::string_view channel, const std::vector<std::string>& payloads) override {
    AULA_TRY_STATUS(checkChannel(channel));
    std::vector<Params> sets;
    for (const auto& payload : payloads) {
      if (payload.size() >= 8000) {
        return makeError(Errc::kInvalidArgument,
                         "A message between brokers holds at most 7,999 bytes, not {}.",
                         payload.size());
      }
      sets.push_back({std::string(channel), payload});
    }
    if (sets.empty())
      return okStatus();
    for (int attempt = 0;; ++attempt) {
      auto lease = AULA_TRY(pool_.acquire());
      Failure failure = Failure::kNone;
      auto done = lease->executeEach("SELECT pg_notify(?, ?)", sets, &failure);
      if (done)
        return okStatus();
      if (failure == Failure::kBroken && !lease.fresh() && attempt <= settings_.poolSize) {
        pool_.dropIdle();
        continue;
      }
      return std::move(done).error();
    }
  }

  Result<std::unique_ptr<Subscription>> listen(std::string channel,
                                               std::function<void(std::string_view)> onMessage,
                                               std::function<void()> onGap) override {
    AULA_TRY_STATUS(checkChannel(channel));
    auto subscription = std::make_unique<PgSubscription>(pool_, settings_, std::move(channel),
                                                         std::move(onMessage), std::move(onGap));
    AULA_TRY_STATUS(subscription->start());
    return std::unique_ptr<Subscription>(std::move(subscription));
  }

 private:
  // A connection with `sql` run on it. A pooled connection whose server went
  // away since its last use fails here, before any of a caller's work: the
  // pool is emptied and a new connection tried, so that callers see an error
  // only while the server is really away.
  Result<Pool::Lease> leaseAndRun(std::string_view sql, const Params& params = {}) {
    for (int attempt = 0;; ++attempt) {
      auto lease = AULA_TRY(pool_.acquire());
      Failure failure = Failure::kNone;
      auto done = lease->execute(sql, params, &failure);
      if (done)
        return lease;
      if (failure == Failure::kBroken && !lease.fresh() && attempt <= settings_.poolSize) {
        pool_.dropIdle();
        continue;
      }
      return std::move(done).error();
    }
  }

  Settings settings_;
  Pool pool_;
};

// Where the connection string points, for messages: "127.0.0.1:5432" or
// "/run/postgresql/.s.PGSQL.5432". Never the whole string, which may hold a
// password.
Result<std::string> describeAddress(const std::string& conninfo) {
  char* parseError = nullptr;
  ConninfoHandle options(PQconninfoParse(conninfo.c_str(), &parseError));
  if (options == nullptr) {
    std::string why = parseError == nullptr ? "out of memory" : detail::oneLine(parseError);
    PQfreemem(parseError);
    return makeError(Errc::kConfig, "The PostgreSQL connection string is not valid: {}.", why);
  }
  std::string host;
  std::string hostaddr;
  std::string port;
  for (const PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val == nullptr)
      continue;
    std::string_view keyword(option->keyword);
    if (keyword == "host")
      host = option->val;
    if (keyword == "hostaddr")
      hostaddr = option->val;
    if (keyword == "port")
      port = option->val;
  }
  auto fromEnvironment = [](std::string& value, const char* name, const char* fallback) {
    if (!value.empty())
      return;
    const char* set = std::getenv(name);
    value = set != nullptr && *set != '\0' ? set : fallback;
  };
  if (host.empty())
    host = hostaddr;
  fromEnvironment(host, "PGHOST", "the local socket");
  fromEnvironment(port, "PGPORT", "5432");
  if (host.starts_with('/'))
    return fmt::format("{}/.s.PGSQL.{}", host, port);
  if (host.find(':') != std::string::npos)
    return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

}  // namespace

Result<std::unique_ptr<Database>> openPostgres(const PostgresOptions& options) {
  if (options.poolSize < 1) {
    return makeError(Errc::kInvalidArgument,
                     "The PostgreSQL connection pool needs at least 1 connection, not {}.",
                     options.poolSize);
  }
  if (PQisthreadsafe() == 0) {
    return makeError(Errc::kInternal,
                     "This libpq was built without thread support, which the broker needs.");
  }
  std::string address = AULA_TRY(describeAddress(options.conninfo));
  auto database = std::make_unique<PostgresDatabase>(
      Settings{options.conninfo, std::move(address), options.connectTimeout, options.poolSize});
  AULA_TRY_STATUS(database->open());
  return std::unique_ptr<Database>(std::move(database));
}

}  // namespace aula::broker::db
