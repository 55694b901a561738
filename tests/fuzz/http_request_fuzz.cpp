// libFuzzer target for the HTTP request parser, percent-decoding and the
// router: the bytes a client can send before anything authenticates it.
//
// Besides crashes and sanitizer findings, it checks two properties and
// aborts when they break: how the bytes are split across feed() calls never
// changes what is parsed, and every request that comes out has a path the
// rest of the server may trust (absolute, no NUL, no ".." segment).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/http_server.hpp"

namespace {

using aula::http::ParseLimits;
using aula::http::RequestParser;
using aula::http::Router;
using aula::http::ServerRequest;
using aula::http::ServerResponse;

// What one parse produced, to compare two ways of feeding the same bytes.
struct Outcome {
  std::vector<std::string> requests;  // a digest of each request
  RequestParser::State last = RequestParser::State::kNeedMore;
  int errorStatus = 0;

  bool operator==(const Outcome&) const = default;
};

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

const Router& router() {
  static const Router instance = [] {
    Router r;
    const auto ok = [](ServerRequest&) { return ServerResponse::text(200, "ok"); };
    r.add("GET", "/api/v1/desktops", ok);
    r.add("GET", "/api/v1/desktops/mine", ok);
    r.add("GET", "/api/v1/desktops/{id}", ok);
    r.add("DELETE", "/api/v1/desktops/{id}", ok);
    r.add("POST", "/api/v1/desktops/{id}/console", ok);
    r.add("GET", "/", ok);
    return r;
  }();
  return instance;
}

std::string digest(ServerRequest& request, const ParseLimits& limits) {
  check(!request.method.empty());
  check(request.target.starts_with('/'));
  check(request.path.starts_with('/'));
  check(request.path.find('\0') == std::string::npos);
  check(request.path.find("/../") == std::string::npos && !request.path.ends_with("/.."));
  check(request.body.size() <= limits.maxBodyBytes);
  for (const auto& [name, value] : request.headers) {
    check(!name.empty());
    check(name.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ :") == std::string::npos);
    check(value.find_first_of("\r\n") == std::string::npos);
  }
  ServerResponse response = router().dispatch(request);
  check(response.status == 200 || response.status == 404 || response.status == 405);
  std::string out = request.method + ' ' + request.target + ' ' + request.path + '\n';
  for (const auto& [name, value] : request.headers) {
    out += name + ':' + value + '\n';
  }
  for (const auto& [name, value] : request.query) {
    out += name + '=' + value + '&';
  }
  return out + '\n' + request.body;
}

// Feeds `input` in pieces whose sizes come from `seed` (0: all at once, 1:
// byte by byte) and takes every request that completes.
Outcome parse(std::string_view input, const ParseLimits& limits, std::uint32_t seed) {
  Outcome outcome;
  RequestParser parser(limits);
  std::size_t position = 0;
  while (true) {
    std::size_t size = input.size();
    if (seed == 1) {
      size = 1;
    } else if (seed != 0) {
      seed = seed * 1103515245U + 12345U;
      size = 1 + (seed >> 16) % 97;
    }
    const std::string_view piece = input.substr(position, size);
    position += piece.size();
    RequestParser::State state = parser.feed(piece);
    while (state == RequestParser::State::kComplete) {
      ServerRequest request = parser.take();
      outcome.requests.push_back(digest(request, limits));
      state = parser.feed({});
    }
    outcome.last = state;
    if (state == RequestParser::State::kError) {
      outcome.errorStatus = parser.errorStatus();
      const std::string& message = parser.errorMessage();
      check(!message.empty() && message.back() == '.');
      const int status = parser.errorStatus();
      check(status == 400 || status == 413 || status == 431 || status == 501 || status == 505);
      // The error body must serialize whatever the message quotes.
      check(!ServerResponse::error(status, "bad_request", message).body.empty());
      break;
    }
    if (position >= input.size()) {
      break;
    }
  }
  return outcome;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  std::string decoded;
  if (aula::http::urlDecode(input, decoded, false)) {
    check(decoded.size() <= input.size());
  }
  aula::http::urlDecode(input, decoded, true);

  // The input's hash picks limits and splits, so a crash replays exactly.
  std::uint32_t hash = 2166136261U;
  for (unsigned char c : input) {
    hash = (hash ^ c) * 16777619U;
  }
  const ParseLimits limits =
      (hash & 1U) != 0 ? ParseLimits{.maxHeaderBytes = 128, .maxBodyBytes = 16} : ParseLimits{};

  const Outcome whole = parse(input, limits, 0);
  check(parse(input, limits, hash | 2U) == whole);
  check(parse(input, limits, 1) == whole);
  return 0;
}
