// Parsing untrusted JSON with limits.
#include "aula/common/json.hpp"

namespace aula::json {

Result<Json> parse(std::string_view text, const ParseLimits& limits) {
  if (text.size() > limits.maxBytes) {
    return makeError(Errc::kInvalidArgument,
                     "The JSON document is {} bytes, over the limit of {} bytes.", text.size(),
                     limits.maxBytes);
  }
  bool tooDeep = false;
  // The callback sees each value's depth as it is parsed, so a deeply nested
  // document is stopped before it is built.
  auto callback = [&](int depth, Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= limits.maxDepth) {
      tooDeep = true;
    }
    return !tooDeep;
  };
  try {
    Json value = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true);
    if (tooDeep) {
      return makeError(Errc::kInvalidArgument, "The JSON document nests deeper than {} levels.",
                       limits.maxDepth);
    }
    return value;
  } catch (const Json::parse_error& e) {
    if (tooDeep) {
      return makeError(Errc::kInvalidArgument, "The JSON document nests deeper than {} levels.",
                       limits.maxDepth);
    }
    return makeError(Errc::kParse, "The body is not valid JSON (error at byte {}).", e.byte);
  }
}

Result<std::string> getString(const Json& object, std::string_view field) {
  auto it = object.find(field);
  if (it == object.end())
    return makeError(Errc::kInvalidArgument, "The field '{}' is missing.", field);
  if (!it->is_string())
    return makeError(Errc::kInvalidArgument, "The field '{}' must be a string.", field);
  return it->get<std::string>();
}

Result<std::int64_t> getInt(const Json& object, std::string_view field) {
  auto it = object.find(field);
  if (it == object.end())
    return makeError(Errc::kInvalidArgument, "The field '{}' is missing.", field);
  if (!it->is_number_integer()) {
    return makeError(Errc::kInvalidArgument, "The field '{}' must be an integer.", field);
  }
  return it->get<std::int64_t>();
}

Result<bool> getBool(const Json& object, std::string_view field) {
  auto it = object.find(field);
  if (it == object.end())
    return makeError(Errc::kInvalidArgument, "The field '{}' is missing.", field);
  if (!it->is_boolean()) {
    return makeError(Errc::kInvalidArgument, "The field '{}' must be true or false.", field);
  }
  return it->get<bool>();
}

Status checkFields(const Json& object, std::initializer_list<std::string_view> allowed) {
  if (!object.is_object())
    return Error(Errc::kInvalidArgument, "The body must be a JSON object.");
  for (const auto& [key, value] : object.items()) {
    bool known = false;
    for (auto a : allowed)
      known = known || a == key;
    if (!known) {
      return makeError(Errc::kInvalidArgument,
                       "The field '{}' is not known here; allowed fields: {}.", key,
                       fmt::join(allowed, ", "));
    }
  }
  return {};
}

}  // namespace aula::json
