// JSON for Aula: nlohmann::json, plus parsing of untrusted input with limits
// (size, nesting depth) that turns every failure into a sentence.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "aula/common/result.hpp"

namespace aula::json {

using Json = nlohmann::json;

struct ParseLimits {
  std::size_t maxBytes = 1024 * 1024;
  int maxDepth = 32;
};

// Errors are kInvalidArgument (too large, too deep) or kParse (not JSON), each
// naming the limit or the byte offset.
Result<Json> parse(std::string_view text, const ParseLimits& limits = {});

// Reads an object field with its expected type, for request bodies.
// Errors (kInvalidArgument) name the field and the expected type.
Result<std::string> getString(const Json& object, std::string_view field);
Result<std::int64_t> getInt(const Json& object, std::string_view field);
Result<bool> getBool(const Json& object, std::string_view field);

// Fails with kInvalidArgument naming the first field of `object` not in
// `allowed` (unknown fields are refused rather than ignored).
Status checkFields(const Json& object, std::initializer_list<std::string_view> allowed);

}  // namespace aula::json
