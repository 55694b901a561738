// The engine-independent half of the storage layer: Row accessors, the
// Transaction helpers and the migration runner both adapters share.
#include "aula/broker/database.hpp"

#include <algorithm>
#include <cassert>
#include <cctype>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "aula/common/log.hpp"

#include "db/database_internal.hpp"

namespace aula::broker::db {

bool Row::isNull(std::size_t i) const {
  assert(i < columns_.size() && "Row column out of range");
  return std::holds_alternative<std::monostate>(columns_[i]);
}

std::int64_t Row::integer(std::size_t i) const {
  assert(i < columns_.size() && "Row column out of range");
  assert(std::holds_alternative<std::int64_t>(columns_[i]) && "Row column is not an integer");
  return std::get<std::int64_t>(columns_[i]);
}

double Row::real(std::size_t i) const {
  assert(i < columns_.size() && "Row column out of range");
  // SQLite hands back a whole number stored in a column without REAL
  // affinity as an integer; reading it as a real is still what the caller means.
  if (const auto* whole = std::get_if<std::int64_t>(&columns_[i])) {
    return static_cast<double>(*whole);
  }
  assert(std::holds_alternative<double>(columns_[i]) && "Row column is not a number");
  return std::get<double>(columns_[i]);
}

const std::string& Row::text(std::size_t i) const {
  assert(i < columns_.size() && "Row column out of range");
  assert(std::holds_alternative<std::string>(columns_[i]) && "Row column is not text");
  return std::get<std::string>(columns_[i]);
}

std::optional<std::int64_t> Row::optInteger(std::size_t i) const {
  if (isNull(i))
    return std::nullopt;
  return integer(i);
}

std::optional<std::string> Row::optText(std::size_t i) const {
  if (isNull(i))
    return std::nullopt;
  return text(i);
}

Status Database::notify(std::string_view /*channel*/, std::string_view /*payload*/) {
  return okStatus();
}

Status Database::notifyEach(std::string_view channel, const std::vector<std::string>& payloads) {
  for (const auto& payload : payloads)
    AULA_TRY_STATUS(notify(channel, payload));
  return {};
}

// Adapters keep what they are given: the interface takes it by value.
// NOLINTBEGIN(performance-unnecessary-value-param)
Result<std::unique_ptr<Subscription>> Database::listen(
    std::string /*channel*/, std::function<void(std::string_view)> /*onMessage*/,
    std::function<void()> /*onGap*/) {
  return std::unique_ptr<Subscription>();
}
// NOLINTEND(performance-unnecessary-value-param)

Result<Row> Transaction::queryOne(std::string_view sql, const Params& params,
                                  std::string_view notFoundMessage) {
  auto rows = AULA_TRY(query(sql, params));
  if (rows.empty())
    return Error(Errc::kNotFound, std::string(notFoundMessage));
  return std::move(rows.front());
}

std::string placeholders(std::size_t count) {
  std::string out;
  out.reserve(count * 3);
  for (std::size_t i = 0; i < count; ++i)
    out += i == 0 ? "?" : ", ?";
  return out;
}

namespace {

// A PostgreSQL array literal of `values`: {1,NULL,"a \"b\""}.
std::string arrayLiteral(const std::vector<const Value*>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0)
      out.push_back(',');
    const Value& v = *values[i];
    if (const auto* whole = std::get_if<std::int64_t>(&v)) {
      out += std::to_string(*whole);
    } else if (const auto* real = std::get_if<double>(&v)) {
      // The shortest text that reads back as the same double.
      out += std::isnan(*real)   ? std::string("NaN")
             : std::isinf(*real) ? std::string(*real > 0 ? "Infinity" : "-Infinity")
                                 : fmt::format("{}", *real);
    } else if (const auto* text = std::get_if<std::string>(&v)) {
      out.push_back('"');
      for (char c : *text) {
        if (c == '"' || c == '\\')
          out.push_back('\\');
        out.push_back(c);
      }
      out.push_back('"');
    } else {
      out += "NULL";
    }
  }
  return out + "}";
}

// One array per column of `rows`, and the unnest() that turns them back
// into rows: "unnest(CAST(? AS TEXT[]), CAST(? AS BIGINT[]))".
std::string unnestColumns(const std::vector<std::string>& types, const std::vector<Params>& rows,
                          Params* params) {
  std::string sql = "unnest(";
  std::vector<const Value*> column(rows.size());
  for (std::size_t c = 0; c < types.size(); ++c) {
    for (std::size_t r = 0; r < rows.size(); ++r)
      column[r] = &rows[r][c];
    params->emplace_back(arrayLiteral(column));
    sql += fmt::format("{}CAST(? AS {}[])", c == 0 ? "" : ", ", types[c]);
  }
  return sql + ")";
}

}  // namespace

IdList inIds(Dialect dialect, const std::vector<std::int64_t>& ids) {
  IdList out;
  if (dialect == Dialect::kPostgres) {
    std::vector<Value> values(ids.begin(), ids.end());
    std::vector<const Value*> pointers;
    pointers.reserve(values.size());
    for (const auto& v : values)
      pointers.push_back(&v);
    out.sql = "= ANY(CAST(? AS BIGINT[]))";
    out.params.emplace_back(arrayLiteral(pointers));
    return out;
  }
  // "IN ()" is not SQL; "x IN (NULL)" is never true, so an empty list
  // matches no row, as "= ANY('{}')" does on PostgreSQL.
  out.sql = ids.empty() ? "IN (NULL)" : "IN (" + placeholders(ids.size()) + ")";
  out.params.assign(ids.begin(), ids.end());
  return out;
}

Result<std::vector<std::vector<Row>>> Transaction::queryEach(std::string_view sql,
                                                             const std::vector<Params>& sets) {
  std::vector<std::vector<Row>> out;
  out.reserve(sets.size());
  for (const auto& params : sets)
    out.push_back(AULA_TRY(query(sql, params)));
  return out;
}

Result<std::vector<std::vector<Row>>> Transaction::queryAll(
    const std::vector<Statement>& statements) {
  std::vector<std::vector<Row>> out;
  out.reserve(statements.size());
  for (const auto& s : statements)
    out.push_back(AULA_TRY(query(s.sql, s.params)));
  return out;
}

namespace {

// Rows per multi-row INSERT on SQLite: well under its 32,766 values for any
// of our tables.
constexpr std::size_t kRowsPerStatement = 200;

std::string valuesRow(const std::vector<Column>& columns) {
  std::string out = "(";
  for (std::size_t i = 0; i < columns.size(); ++i)
    out += fmt::format("{}CAST(? AS {})", i == 0 ? "" : ", ", columns[i].type);
  return out + ")";
}

// Runs a write now or queues it (Send).
Status sendWrite(Transaction& tx, Send when, const std::string& sql, Params params) {
  if (when == Send::kLater) {
    tx.execLater(sql, std::move(params));
    return {};
  }
  AULA_TRY(tx.exec(sql, params));
  return {};
}

Status checkWidth(const std::vector<Params>& rows, std::size_t width, std::string_view table) {
  for (const auto& row : rows) {
    if (row.size() != width) {
      return makeError(Errc::kInternal,
                       "A batch for the table '{}' has a row of {} values, not {}.", table,
                       row.size(), width);
    }
  }
  return {};
}

}  // namespace

Status insertRows(Transaction& tx, std::string_view table, const std::vector<Column>& columns,
                  const std::vector<Params>& rows, Send when) {
  AULA_TRY_STATUS(checkWidth(rows, columns.size(), table));
  std::string names;
  for (const auto& c : columns)
    names += (names.empty() ? "" : ", ") + c.name;
  if (rows.empty())
    return {};
  if (tx.dialect() == Dialect::kPostgres) {
    std::vector<std::string> types;
    types.reserve(columns.size());
    for (const auto& c : columns)
      types.push_back(c.type);
    Params params;
    auto from = unnestColumns(types, rows, &params);
    return sendWrite(tx, when,
                     fmt::format("INSERT INTO {} ({}) SELECT * FROM {}", table, names, from),
                     std::move(params));
  }
  for (std::size_t start = 0; start < rows.size(); start += kRowsPerStatement) {
    const std::size_t end = std::min(rows.size(), start + kRowsPerStatement);
    std::string sql = fmt::format("INSERT INTO {} ({}) VALUES ", table, names);
    Params params;
    for (std::size_t i = start; i < end; ++i) {
      sql += (i == start ? "" : ", ") + valuesRow(columns);
      params.insert(params.end(), rows[i].begin(), rows[i].end());
    }
    AULA_TRY_STATUS(sendWrite(tx, when, sql, std::move(params)));
  }
  return {};
}

Status updateRows(Transaction& tx, std::string_view table, const std::vector<Column>& columns,
                  std::string_view key, const std::vector<Params>& rows, Send when) {
  AULA_TRY_STATUS(checkWidth(rows, columns.size() + 1, table));
  if (rows.empty())
    return {};
  if (tx.dialect() == Dialect::kSqlite) {
    std::string sets;
    for (const auto& c : columns)
      sets += fmt::format("{}{} = ?", sets.empty() ? "" : ", ", c.name);
    AULA_TRY(tx.queryEach(fmt::format("UPDATE {} SET {} WHERE {} = ?", table, sets, key), rows));
    return {};
  }
  std::string sets;
  std::string names;
  std::vector<std::string> types;
  for (const auto& c : columns) {
    sets += fmt::format("{}{} = v.{}", sets.empty() ? "" : ", ", c.name, c.name);
    names += c.name + ", ";
    types.push_back(c.type);
  }
  types.emplace_back("BIGINT");
  Params params;
  auto from = unnestColumns(types, rows, &params);
  return sendWrite(
      tx, when,
      fmt::format("UPDATE {0} AS t SET {1} FROM {2} AS v({3}aula_key) WHERE t.{4} = v.aula_key",
                  table, sets, from, names, key),
      std::move(params));
}

Result<std::int64_t> Transaction::queryInt(std::string_view sql, const Params& params) {
  auto rows = AULA_TRY(query(sql, params));
  // No row counts as NULL, as it does for a scalar subquery.
  if (rows.empty() || rows.front().size() == 0 || rows.front().isNull(0))
    return std::int64_t{0};
  const Value& value = rows.front().at(0);
  // PostgreSQL's SUM over BIGINT is NUMERIC, which arrives as a double.
  if (const auto* real = std::get_if<double>(&value))
    return static_cast<std::int64_t>(*real);
  return rows.front().integer(0);
}

namespace detail {
namespace {

constexpr std::string_view kCreateVersionTableSqlite =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)";
// BIGINT: PostgreSQL's INTEGER is 32 bits, and Unix seconds outgrow it in 2038.
constexpr std::string_view kCreateVersionTablePostgres =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

Error tooNew(std::int64_t stored, int newest) {
  return makeError(Errc::kConfig,
                   "The database schema is at version {}, newer than this broker knows ({}); "
                   "upgrade the broker or restore a backup.",
                   stored, newest);
}

Status createVersionTable(Database& database) {
  std::string_view sql = database.dialect() == Dialect::kPostgres ? kCreateVersionTablePostgres
                                                                  : kCreateVersionTableSqlite;
  Status status;
  // Two PostgreSQL brokers creating the table at once: the loser sees a
  // unique violation in the catalog, and the table exists on its second try.
  for (int attempt = 0; attempt < 2; ++attempt) {
    status = database.transact(TxMode::kWrite, [&](Transaction& tx) -> Status {
      AULA_TRY(tx.exec(sql));
      return okStatus();
    });
    if (status || status.error().code() != Errc::kAlreadyExists)
      break;
  }
  return status;
}

std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool isBlank(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

}  // namespace

Result<int> readSchemaVersion(Database& database) {
  return database.transactValue<int>(TxMode::kRead, [](Transaction& tx) -> Result<int> {
    std::string_view exists =
        tx.dialect() == Dialect::kPostgres
            ? "SELECT CASE WHEN to_regclass('schema_version') IS NULL THEN 0 ELSE 1 END"
            : "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'";
    if (AULA_TRY(tx.queryInt(exists)) == 0)
      return 0;
    return static_cast<int>(AULA_TRY(tx.queryInt("SELECT MAX(version) FROM schema_version")));
  });
}

Status applyMigrations(Database& database, const std::vector<Migration>& migrations) {
  std::vector<const Migration*> ordered;
  ordered.reserve(migrations.size());
  for (const auto& migration : migrations)
    ordered.push_back(&migration);
  std::sort(ordered.begin(), ordered.end(),
            [](const Migration* a, const Migration* b) { return a->version < b->version; });
  for (std::size_t i = 0; i < ordered.size(); ++i) {
    assert(ordered[i]->version > 0 && "Migration versions start at 1");
    assert((i == 0 || ordered[i - 1]->version < ordered[i]->version) &&
           "Two migrations share a version");
  }
  const int newest = ordered.empty() ? 0 : ordered.back()->version;

  // Checked before anything is written, so that a database of a newer broker
  // is left exactly as it was.
  const int stored = AULA_TRY(readSchemaVersion(database));
  if (stored > newest)
    return tooNew(stored, newest);
  if (stored == newest)
    return okStatus();

  AULA_TRY_STATUS(createVersionTable(database));
  for (const Migration* migration : ordered) {
    if (migration->version <= stored)
      continue;
    bool applied = false;
    auto status = database.transact(TxMode::kWrite, [&](Transaction& tx) -> Status {
      applied = false;
      const bool postgres = tx.dialect() == Dialect::kPostgres;
      if (postgres) {
        // Another broker may be migrating the same database. LOCK takes no
        // snapshot, so the version read after it includes whatever that
        // broker committed while we waited.
        AULA_TRY(tx.exec("LOCK TABLE schema_version IN SHARE ROW EXCLUSIVE MODE"));
      }
      const std::int64_t current = AULA_TRY(tx.queryInt("SELECT MAX(version) FROM schema_version"));
      if (current > newest)
        return tooNew(current, newest);
      if (current >= migration->version)
        return okStatus();

      const std::string& text =
          postgres && !migration->postgres.empty() ? migration->postgres : migration->sqlite;
      for (const auto& statement : splitStatements(text)) {
        auto changed = tx.exec(statement);
        if (!changed) {
          return changed.error().context(fmt::format("Cannot apply database migration {} ({}).",
                                                     migration->version, migration->name));
        }
      }
      AULA_TRY(tx.exec("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                       {std::int64_t{migration->version}, migration->name, unixNow()}));
      applied = true;
      return okStatus();
    });
    AULA_TRY_STATUS(status);
    if (applied)
      log::info("Applied database migration {} ({}).", migration->version, migration->name);
  }
  return okStatus();
}

std::vector<std::string> splitStatements(std::string_view sql) {
  std::vector<std::string> statements;
  std::string current;
  bool hasCode = false;  // a statement of only comments is no statement
  std::size_t i = 0;
  auto finish = [&] {
    if (hasCode) {
      auto begin = current.find_first_not_of(" \t\r\n");
      auto end = current.find_last_not_of(" \t\r\n");
      statements.push_back(current.substr(begin, end - begin + 1));
    }
    current.clear();
    hasCode = false;
  };
  // Copies up to and including `terminator`, or to the end.
  auto copyThrough = [&](std::string_view terminator) {
    auto end = sql.find(terminator, i);
    end = end == std::string_view::npos ? sql.size() : end + terminator.size();
    current.append(sql.substr(i, end - i));
    i = end;
  };
  while (i < sql.size()) {
    const char c = sql[i];
    const std::string_view rest = sql.substr(i);
    if (c == ';') {
      finish();
      ++i;
    } else if (rest.starts_with("--")) {
      copyThrough("\n");
    } else if (rest.starts_with("/*")) {
      current.append("/*");
      i += 2;
      copyThrough("*/");
    } else if (c == '\'' || c == '"') {
      // A doubled quote inside a literal closes and reopens it, which this
      // handles without special casing.
      current.push_back(c);
      ++i;
      copyThrough(std::string_view(&c, 1));
      hasCode = true;
    } else if (rest.starts_with("$$")) {
      current.append("$$");
      i += 2;
      copyThrough("$$");
      hasCode = true;
    } else {
      current.push_back(c);
      hasCode = hasCode || !isBlank(c);
      ++i;
    }
  }
  finish();
  return statements;
}

std::string sqlExcerpt(std::string_view sql) {
  constexpr std::size_t kLength = 80;
  std::string flat = oneLine(sql);
  if (flat.size() <= kLength)
    return flat;
  std::size_t cut = kLength;
  // Not in the middle of a UTF-8 sequence.
  while (cut > 0 && (static_cast<unsigned char>(flat[cut]) & 0xC0) == 0x80)
    --cut;
  return flat.substr(0, cut) + "...";
}

std::string oneLine(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (isBlank(c)) {
      if (!out.empty() && out.back() != ' ')
        out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '.'))
    out.pop_back();
  return out;
}

}  // namespace detail
}  // namespace aula::broker::db
