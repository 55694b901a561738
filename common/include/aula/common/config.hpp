// Configuration from TOML files with environment overrides.
//
// Each program declares a Schema: every key it knows, its type, default, and
// limits. Loading checks the file against it and fails with an error that
// names the file, the line and column, the key and what was expected, so an
// admin can fix the file without reading code. Unknown keys are errors (with
// a suggestion when one is close), since a misspelt key silently ignored is a
// setting that silently does not apply.
//
// Environment variables override the file: key "broker.listen" with prefix
// "AULA_" is AULA_BROKER_LISTEN.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::config {

enum class Type { kString, kInt, kBool, kDouble, kStringList, kStringMap };
std::string_view typeName(Type type);  // "a string", "an integer", ...

using StringMap = std::map<std::string, std::string>;
using Value =
    std::variant<std::string, std::int64_t, bool, double, std::vector<std::string>, StringMap>;

struct KeySpec {
  std::string key;  // dotted: "section.name"
  Type type = Type::kString;
  std::optional<Value> defaultValue;  // none and not required: absent is allowed
  bool required = false;
  std::string help;
  std::optional<std::int64_t> min;   // kInt
  std::optional<std::int64_t> max;   // kInt
  std::vector<std::string> choices;  // kString: allowed values, if any
};

class Schema {
 public:
  explicit Schema(std::string envPrefix = "AULA_") : envPrefix_(std::move(envPrefix)) {}

  Schema& add(KeySpec spec);
  Schema& string(std::string key, std::optional<std::string> def, std::string help = {});
  Schema& integer(std::string key, std::optional<std::int64_t> def, std::int64_t min,
                  std::int64_t max, std::string help = {});
  Schema& boolean(std::string key, std::optional<bool> def, std::string help = {});
  Schema& number(std::string key, std::optional<double> def, std::string help = {});
  Schema& stringList(std::string key, std::vector<std::string> def, std::string help = {});
  Schema& stringMap(std::string key, std::string help = {});
  Schema& choice(std::string key, std::string def, std::vector<std::string> choices,
                 std::string help = {});
  Schema& require(std::string key, Type type, std::string help = {});

  const KeySpec* find(std::string_view key) const;
  const std::vector<KeySpec>& keys() const { return keys_; }
  const std::string& envPrefix() const { return envPrefix_; }
  // "broker.listen" -> "AULA_BROKER_LISTEN"
  std::string envName(std::string_view key) const;

 private:
  std::string envPrefix_;
  std::vector<KeySpec> keys_;
};

// Reads an environment variable; injectable so tests need not touch the process's.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup processEnvironment();
EnvLookup noEnvironment();

class Config {
 public:
  // Errors are Errc::kConfig, each naming the file (and line:column), the key
  // and what is wrong.
  static Result<Config> loadFile(const std::filesystem::path& path, const Schema& schema,
                                 const EnvLookup& env = processEnvironment());
  static Result<Config> parse(std::string_view text, std::string sourceName, const Schema& schema,
                              const EnvLookup& env = processEnvironment());
  // Defaults and environment only, for programs run without a file.
  static Result<Config> fromDefaults(const Schema& schema,
                                     const EnvLookup& env = processEnvironment());

  bool has(std::string_view key) const;
  // Typed getters. Asking for an undeclared key or the wrong type is a bug
  // (assertion), not a configuration error.
  const std::string& getString(std::string_view key) const;
  std::int64_t getInt(std::string_view key) const;
  bool getBool(std::string_view key) const;
  double getDouble(std::string_view key) const;
  const std::vector<std::string>& getStringList(std::string_view key) const;
  const StringMap& getStringMap(std::string_view key) const;
  std::optional<std::string> getOptionalString(std::string_view key) const;

  // Where a value came from: "path:line:col", "environment variable AULA_X", "default".
  std::string origin(std::string_view key) const;
  const std::string& sourceName() const { return sourceName_; }

  // Sets a value in memory (after validation by type), for command-line overrides.
  Status set(std::string_view key, std::string_view text);

 private:
  struct Entry {
    Value value;
    std::string origin;
  };
  const Entry& entry(std::string_view key, Type type) const;
  Status applyEnvironment(const Schema& schema, const EnvLookup& env);
  Status checkRequired(const Schema& schema) const;

  Schema schema_;
  std::string sourceName_;
  std::map<std::string, Entry, std::less<>> values_;
};

}  // namespace aula::config
