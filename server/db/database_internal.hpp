// What the SQLite and PostgreSQL adapters share, kept out of the public
// header: the migration runner (written once, on top of Database::transact)
// and small SQL text helpers.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "aula/broker/database.hpp"
#include "aula/common/result.hpp"

namespace aula::broker::db::detail {

// The highest version recorded in schema_version, 0 when the table does not
// exist yet.
Result<int> readSchemaVersion(Database& database);

// Database::migrate for both engines.
Status applyMigrations(Database& database, const std::vector<Migration>& migrations);

// Splits a migration's text at ';' outside quotes and comments; blank
// statements are dropped.
std::vector<std::string> splitStatements(std::string_view sql);

// The statement's first 80 characters on one line, for error messages.
std::string sqlExcerpt(std::string_view sql);

// `text` on one line, without a trailing period or spaces, so that engine
// messages can end one of our sentences.
std::string oneLine(std::string_view text);

}  // namespace aula::broker::db::detail
