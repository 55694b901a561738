// Loading and validating TOML configuration against a Schema.
#include "aula/common/config.hpp"

#include <charconv>
#include <cstdlib>
#include <sstream>

#include <toml++/toml.h>

#include "aula/common/file.hpp"

namespace aula::config {
namespace {

std::string position(const std::string& source, const toml::source_region& region) {
  if (region.begin.line == 0)
    return source;
  return fmt::format("{}:{}:{}", source, region.begin.line, region.begin.column);
}

std::size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1);
  std::vector<std::size_t> cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string suggestion(const Schema& schema, std::string_view key) {
  const KeySpec* best = nullptr;
  std::size_t bestDistance = 3;  // further than two edits is no suggestion
  for (const auto& spec : schema.keys()) {
    std::size_t d = editDistance(spec.key, key);
    if (d < bestDistance) {
      bestDistance = d;
      best = &spec;
    }
  }
  return best != nullptr ? fmt::format(" Did you mean '{}'?", best->key) : std::string();
}

bool isPrefixOfKnownKey(const Schema& schema, std::string_view prefix) {
  for (const auto& spec : schema.keys()) {
    if (spec.key.size() > prefix.size() && spec.key.compare(0, prefix.size(), prefix) == 0 &&
        spec.key[prefix.size()] == '.') {
      return true;
    }
  }
  return false;
}

Result<std::int64_t> parseInt(std::string_view text) {
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return Error(Errc::kConfig, "not an integer");
  }
  return v;
}

Result<bool> parseBool(std::string_view text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on")
    return true;
  if (text == "false" || text == "0" || text == "no" || text == "off")
    return false;
  return Error(Errc::kConfig, "not a boolean");
}

Status checkLimits(const KeySpec& spec, const Value& value, const std::string& where) {
  if (spec.type == Type::kInt) {
    auto v = std::get<std::int64_t>(value);
    if ((spec.min && v < *spec.min) || (spec.max && v > *spec.max)) {
      return makeError(Errc::kConfig, "{}: key '{}' is {}, outside the allowed range {} to {}.",
                       where, spec.key, v, spec.min.value_or(INT64_MIN),
                       spec.max.value_or(INT64_MAX));
    }
  }
  if (spec.type == Type::kString && !spec.choices.empty()) {
    const auto& v = std::get<std::string>(value);
    if (std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end()) {
      return makeError(Errc::kConfig, "{}: key '{}' is '{}', but must be one of: {}.", where,
                       spec.key, v, fmt::join(spec.choices, ", "));
    }
  }
  return {};
}

// Converts a TOML node to the declared type, or explains the mismatch.
Result<Value> fromNode(const KeySpec& spec, const toml::node& node, const std::string& source,
                       const std::string& where) {
  auto mismatch = [&](std::string_view actual) {
    return makeError(Errc::kConfig, "{}: key '{}' must be {}, but is {}.", where, spec.key,
                     typeName(spec.type), actual);
  };
  auto actualName = [](const toml::node& n) -> std::string_view {
    switch (n.type()) {
      case toml::node_type::string:
        return "a string";
      case toml::node_type::integer:
        return "an integer";
      case toml::node_type::floating_point:
        return "a number";
      case toml::node_type::boolean:
        return "a boolean";
      case toml::node_type::array:
        return "an array";
      case toml::node_type::table:
        return "a table";
      default:
        return "a date or time";
    }
  };
  switch (spec.type) {
    case Type::kString:
      if (auto v = node.value_exact<std::string>())
        return Value(*v);
      return mismatch(actualName(node));
    case Type::kInt:
      if (auto v = node.value_exact<std::int64_t>())
        return Value(*v);
      return mismatch(actualName(node));
    case Type::kBool:
      if (auto v = node.value_exact<bool>())
        return Value(*v);
      return mismatch(actualName(node));
    case Type::kDouble:
      if (node.is_number())
        return Value(*node.value<double>());
      return mismatch(actualName(node));
    case Type::kStringList: {
      const auto* arr = node.as_array();
      if (arr == nullptr)
        return mismatch(actualName(node));
      std::vector<std::string> out;
      for (const auto& item : *arr) {
        auto s = item.value_exact<std::string>();
        if (!s) {
          return makeError(Errc::kConfig, "{}: key '{}' must be an array of strings, but holds {}.",
                           position(source, item.source()), spec.key, actualName(item));
        }
        out.push_back(*s);
      }
      return Value(std::move(out));
    }
    case Type::kStringMap: {
      const auto* table = node.as_table();
      if (table == nullptr)
        return mismatch(actualName(node));
      StringMap out;
      for (const auto& [k, v] : *table) {
        auto s = v.value_exact<std::string>();
        if (!s) {
          return makeError(Errc::kConfig, "{}: key '{}.{}' must be a string, but is {}.", where,
                           spec.key, k.str(), actualName(v));
        }
        out.emplace(std::string(k.str()), *s);
      }
      return Value(std::move(out));
    }
  }
  return mismatch("unknown");
}

Result<Value> fromText(const KeySpec& spec, std::string_view text) {
  switch (spec.type) {
    case Type::kString:
      return Value(std::string(text));
    case Type::kInt: {
      auto v = parseInt(text);
      if (!v)
        return v.error();
      return Value(*v);
    }
    case Type::kBool: {
      auto v = parseBool(text);
      if (!v)
        return v.error();
      return Value(*v);
    }
    case Type::kDouble: {
      char* end = nullptr;
      std::string s(text);
      double d = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size())
        return Error(Errc::kConfig, "not a number");
      return Value(d);
    }
    case Type::kStringList: {
      std::vector<std::string> out;
      std::string item;
      std::istringstream in{std::string(text)};
      while (std::getline(in, item, ',')) {
        if (!item.empty())
          out.push_back(item);
      }
      return Value(std::move(out));
    }
    case Type::kStringMap:
      return Error(Errc::kConfig, "a table cannot be set from text");
  }
  return Error(Errc::kConfig, "unknown type");
}

}  // namespace

std::string_view typeName(Type type) {
  switch (type) {
    case Type::kString:
      return "a string";
    case Type::kInt:
      return "an integer";
    case Type::kBool:
      return "a boolean (true or false)";
    case Type::kDouble:
      return "a number";
    case Type::kStringList:
      return "an array of strings";
    case Type::kStringMap:
      return "a table of strings";
  }
  return "a value";
}

Schema& Schema::add(KeySpec spec) {
  assert(find(spec.key) == nullptr && "config key declared twice");
  keys_.push_back(std::move(spec));
  return *this;
}

Schema& Schema::string(std::string key, std::optional<std::string> def, std::string help) {
  KeySpec s{.key = std::move(key), .type = Type::kString, .help = std::move(help)};
  if (def)
    s.defaultValue = Value(*def);
  return add(std::move(s));
}

Schema& Schema::integer(std::string key, std::optional<std::int64_t> def, std::int64_t min,
                        std::int64_t max, std::string help) {
  KeySpec s{
      .key = std::move(key), .type = Type::kInt, .help = std::move(help), .min = min, .max = max};
  if (def)
    s.defaultValue = Value(*def);
  return add(std::move(s));
}

Schema& Schema::boolean(std::string key, std::optional<bool> def, std::string help) {
  KeySpec s{.key = std::move(key), .type = Type::kBool, .help = std::move(help)};
  if (def)
    s.defaultValue = Value(*def);
  return add(std::move(s));
}

Schema& Schema::number(std::string key, std::optional<double> def, std::string help) {
  KeySpec s{.key = std::move(key), .type = Type::kDouble, .help = std::move(help)};
  if (def)
    s.defaultValue = Value(*def);
  return add(std::move(s));
}

Schema& Schema::stringList(std::string key, std::vector<std::string> def, std::string help) {
  return add({.key = std::move(key),
              .type = Type::kStringList,
              .defaultValue = Value(std::move(def)),
              .help = std::move(help)});
}

Schema& Schema::stringMap(std::string key, std::string help) {
  return add({.key = std::move(key),
              .type = Type::kStringMap,
              .defaultValue = Value(StringMap{}),
              .help = std::move(help)});
}

Schema& Schema::choice(std::string key, std::string def, std::vector<std::string> choices,
                       std::string help) {
  return add({.key = std::move(key),
              .type = Type::kString,
              .defaultValue = Value(std::move(def)),
              .help = std::move(help),
              .choices = std::move(choices)});
}

Schema& Schema::require(std::string key, Type type, std::string help) {
  return add({.key = std::move(key), .type = type, .required = true, .help = std::move(help)});
}

const KeySpec* Schema::find(std::string_view key) const {
  for (const auto& spec : keys_) {
    if (spec.key == key)
      return &spec;
  }
  return nullptr;
}

std::string Schema::envName(std::string_view key) const {
  std::string out = envPrefix_;
  for (char c : key) {
    out.push_back(c == '.' || c == '-'
                      ? '_'
                      : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  return out;
}

EnvLookup processEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr)
      return std::nullopt;
    return std::string(v);
  };
}

EnvLookup noEnvironment() {
  return [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
}

Result<Config> Config::loadFile(const std::filesystem::path& path, const Schema& schema,
                                const EnvLookup& env) {
  auto text = file::readFile(path, "configuration file");
  if (!text)
    return Error(Errc::kConfig, text.error().message(), text.error().native());
  return parse(*text, path.string(), schema, env);
}

Result<Config> Config::fromDefaults(const Schema& schema, const EnvLookup& env) {
  return parse("", "(defaults)", schema, env);
}

Result<Config> Config::parse(std::string_view text, std::string sourceName, const Schema& schema,
                             const EnvLookup& env) {
  Config config;
  config.schema_ = schema;
  config.sourceName_ = sourceName;
  for (const auto& spec : schema.keys()) {
    if (spec.defaultValue)
      config.values_[spec.key] = Entry{*spec.defaultValue, "default"};
  }

  toml::table root;
  try {
    root = toml::parse(text, sourceName);
  } catch (const toml::parse_error& e) {
    return makeError(Errc::kConfig, "{}: invalid TOML: {}.", position(sourceName, e.source()),
                     e.description());
  }

  // Walk every leaf; a table that is a declared key (a string map) is a leaf.
  std::function<Status(const toml::table&, const std::string&)> walk =
      [&](const toml::table& table, const std::string& prefix) -> Status {
    for (const auto& [k, node] : table) {
      std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      std::string where = position(sourceName, k.source());
      const KeySpec* spec = schema.find(key);
      if (spec == nullptr && node.is_table() && isPrefixOfKnownKey(schema, key)) {
        AULA_TRY_STATUS(walk(*node.as_table(), key));
        continue;
      }
      if (spec == nullptr) {
        return makeError(Errc::kConfig, "{}: unknown key '{}'.{}", where, key,
                         suggestion(schema, key));
      }
      auto value = AULA_TRY(fromNode(*spec, node, sourceName, where));
      AULA_TRY_STATUS(checkLimits(*spec, value, where));
      config.values_[key] = Entry{std::move(value), where};
    }
    return {};
  };
  AULA_TRY_STATUS(walk(root, ""));
  AULA_TRY_STATUS(config.applyEnvironment(schema, env));
  AULA_TRY_STATUS(config.checkRequired(schema));
  return config;
}

Status Config::applyEnvironment(const Schema& schema, const EnvLookup& env) {
  for (const auto& spec : schema.keys()) {
    if (spec.type == Type::kStringMap)
      continue;
    std::string name = schema.envName(spec.key);
    auto text = env(name);
    if (!text)
      continue;
    std::string where = fmt::format("environment variable {}", name);
    auto value = fromText(spec, *text);
    if (!value) {
      return makeError(Errc::kConfig, "{}: value '{}' for key '{}' must be {}.", where, *text,
                       spec.key, typeName(spec.type));
    }
    AULA_TRY_STATUS(checkLimits(spec, *value, where));
    values_[spec.key] = Entry{std::move(value).value(), where};
  }
  return {};
}

Status Config::checkRequired(const Schema& schema) const {
  for (const auto& spec : schema.keys()) {
    if (spec.required && !values_.contains(spec.key)) {
      auto dot = spec.key.rfind('.');
      std::string table =
          dot == std::string::npos ? "the top level" : "[" + spec.key.substr(0, dot) + "]";
      return makeError(Errc::kConfig,
                       "{}: required key '{}' ({}) is missing; set it in {} or with the "
                       "environment variable {}.",
                       sourceName_, spec.key, typeName(spec.type), table, schema.envName(spec.key));
    }
  }
  return {};
}

Status Config::set(std::string_view key, std::string_view text) {
  const KeySpec* spec = schema_.find(key);
  if (spec == nullptr) {
    return makeError(Errc::kConfig, "Unknown configuration key '{}'.{}", key,
                     suggestion(schema_, key));
  }
  auto value = fromText(*spec, text);
  if (!value) {
    return makeError(Errc::kConfig, "Value '{}' for key '{}' must be {}.", text, key,
                     typeName(spec->type));
  }
  AULA_TRY_STATUS(checkLimits(*spec, *value, "command line"));
  values_[std::string(key)] = Entry{std::move(value).value(), "command line"};
  return {};
}

bool Config::has(std::string_view key) const {
  return values_.find(key) != values_.end();
}

const Config::Entry& Config::entry(std::string_view key, Type type) const {
  [[maybe_unused]] const KeySpec* spec = schema_.find(key);
  assert(spec != nullptr && "config key not declared in the schema");
  assert(spec->type == type && "config key read as the wrong type");
  auto it = values_.find(key);
  assert(it != values_.end() && "optional config key read without has()");
  return it->second;
}

const std::string& Config::getString(std::string_view key) const {
  return std::get<std::string>(entry(key, Type::kString).value);
}
std::int64_t Config::getInt(std::string_view key) const {
  return std::get<std::int64_t>(entry(key, Type::kInt).value);
}
bool Config::getBool(std::string_view key) const {
  return std::get<bool>(entry(key, Type::kBool).value);
}
double Config::getDouble(std::string_view key) const {
  return std::get<double>(entry(key, Type::kDouble).value);
}
const std::vector<std::string>& Config::getStringList(std::string_view key) const {
  return std::get<std::vector<std::string>>(entry(key, Type::kStringList).value);
}
const StringMap& Config::getStringMap(std::string_view key) const {
  return std::get<StringMap>(entry(key, Type::kStringMap).value);
}
std::optional<std::string> Config::getOptionalString(std::string_view key) const {
  if (!has(key))
    return std::nullopt;
  return getString(key);
}

std::string Config::origin(std::string_view key) const {
  auto it = values_.find(key);
  return it == values_.end() ? std::string("unset") : it->second.origin;
}

}  // namespace aula::config
