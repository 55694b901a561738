// The transport-free half of the HTTP server (see http_server.hpp): the
// request parser, percent-decoding, the router and the response factories.
//
// This file needs neither sockets nor mbedTLS, so the fuzz target links it
// alone. Everything here treats its input as hostile: lengths are checked
// before they are trusted, and no input can make it read out of bounds.
#include "aula/common/http_server.hpp"

#include <algorithm>
#include <cassert>
#include <cctype>
#include <utility>

#include <nlohmann/json.hpp>

namespace aula::http {
namespace {

constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kHeadEnd = "\r\n\r\n";
// Longer values than this are cut when quoted back in an error message.
constexpr std::size_t kQuoteLimit = 64;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trimWhitespace(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t");
  if (begin == std::string_view::npos) {
    return {};
  }
  const auto end = s.find_last_not_of(" \t");
  return s.substr(begin, end - begin + 1);
}

// RFC 9110 tchar: what a header name may be made of.
bool isTokenChar(unsigned char c) {
  if (std::isalnum(c) != 0) {
    return true;
  }
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool isToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return isTokenChar(static_cast<unsigned char>(c));
  });
}

// Control characters other than horizontal tab have no place in a head; a
// bare CR or LF inside a line is how request smuggling starts.
bool hasControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && u != '\t') || u == 0x7f;
  });
}

// A value from the request, safe to quote in a log line or an error message.
std::string quote(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, kQuoteLimit)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  if (s.size() > kQuoteLimit) {
    out += "...";
  }
  return out;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

bool isTraversal(std::string_view path) {
  return path.find("/../") != std::string_view::npos || path.ends_with("/..");
}

// "/a/{id}/b" -> {"a", "{id}", "b"}; "/" -> {""}. Trailing slashes count, so
// "/a/" is not "/a".
std::vector<std::string> splitPath(std::string_view path) {
  std::vector<std::string> segments;
  if (path.starts_with('/')) {
    path.remove_prefix(1);
  }
  while (true) {
    const auto slash = path.find('/');
    segments.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) {
      break;
    }
    path.remove_prefix(slash + 1);
  }
  return segments;
}

bool isParam(std::string_view segment) {
  return segment.size() >= 2 && segment.front() == '{' && segment.back() == '}';
}

}  // namespace

// ---- ServerRequest / ServerResponse ------------------------------------------

std::string ServerRequest::header(std::string_view name) const {
  const auto it = headers.find(lower(name));
  return it == headers.end() ? std::string() : it->second;
}

int httpStatusFor(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
    case Errc::kParse:
      return 400;
    case Errc::kUnauthenticated:
      return 401;
    case Errc::kPermissionDenied:
    case Errc::kQuotaExceeded:
      return 403;
    case Errc::kNotFound:
      return 404;
    case Errc::kAlreadyExists:
    case Errc::kConflict:
      return 409;
    case Errc::kRateLimited:
      return 429;
    case Errc::kUnavailable:
    case Errc::kConnectionRefused:
      return 503;
    case Errc::kTimeout:
      return 504;
    case Errc::kTls:
      return 502;
    case Errc::kIo:
    case Errc::kConfig:
    case Errc::kInternal:
      return 500;
  }
  return 500;
}

ServerResponse ServerResponse::json(int status, std::string body) {
  ServerResponse response;
  response.status = status;
  response.headers.emplace_back("Content-Type", "application/json");
  response.body = std::move(body);
  return response;
}

ServerResponse ServerResponse::text(int status, std::string body, std::string contentType) {
  ServerResponse response;
  response.status = status;
  response.headers.emplace_back("Content-Type", std::move(contentType));
  response.body = std::move(body);
  return response;
}

ServerResponse ServerResponse::error(int status, std::string_view code, std::string_view message) {
  const nlohmann::json body = {
      {"error", {{"code", std::string(code)}, {"message", std::string(message)}}}};
  // Messages may quote a decoded path, which need not be UTF-8: replace
  // invalid bytes rather than let dump() throw.
  return json(status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

// ---- urlDecode -----------------------------------------------------------------

bool urlDecode(std::string_view in, std::string& out, bool plusIsSpace) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) {
        return false;
      }
      const int high = hexValue(in[i + 1]);
      const int low = hexValue(in[i + 2]);
      if (high < 0 || low < 0) {
        return false;
      }
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else if (c == '+' && plusIsSpace) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

Status parseQuery(std::string_view query, std::map<std::string, std::string>& out) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty())
      continue;
    const auto equals = pair.find('=');
    std::string key;
    std::string value;
    if (!urlDecode(pair.substr(0, equals), key, true) ||
        (equals != std::string_view::npos && !urlDecode(pair.substr(equals + 1), value, true)))
      return Error(Errc::kInvalidArgument,
                   "The request query contains a malformed percent escape.");
    if (key.find('\0') != std::string::npos || value.find('\0') != std::string::npos)
      return Error(Errc::kInvalidArgument, "The request query contains a NUL byte.");
    out.emplace(std::move(key), std::move(value));  // the first of repeated parameters wins
  }
  return okStatus();
}

// ---- RequestParser -------------------------------------------------------------

RequestParser::State RequestParser::fail(int status, std::string message) {
  errorStatus_ = status;
  errorMessage_ = std::move(message);
  state_ = State::kError;
  return state_;
}

RequestParser::State RequestParser::feed(std::string_view bytes) {
  if (state_ == State::kError) {
    return state_;
  }
  buffer_.append(bytes);
  if (state_ == State::kComplete) {
    return state_;  // the caller has not taken the last request yet
  }

  if (!inBody_) {
    // RFC 9112 asks servers to ignore empty lines before a request line;
    // some clients send a CRLF after a POST body.
    std::size_t skip = 0;
    while (buffer_.size() - skip >= 2 && buffer_.compare(skip, 2, kCrlf) == 0) {
      skip += 2;
    }
    if (skip > 0) {
      buffer_.erase(0, skip);
      scanned_ = 0;
    }
    // Look only at the first maxHeaderBytes: a head that has not ended by then
    // is too large, however much more has arrived.
    const std::size_t window = std::min(buffer_.size(), limits_.maxHeaderBytes);
    // Resume the search a little before where the last one stopped, in case
    // the terminator straddles two reads.
    const std::size_t from = scanned_ >= kHeadEnd.size() ? scanned_ - (kHeadEnd.size() - 1) : 0;
    const std::size_t headEnd = std::string_view(buffer_).substr(0, window).find(kHeadEnd, from);
    // Lines must end in CRLF. A bare LF is refused as soon as it shows, rather
    // than waiting for a CRLFCRLF that an LF-only client never sends.
    const std::size_t checkEnd = headEnd == std::string::npos ? window : headEnd;
    for (auto lf = buffer_.find('\n', scanned_); lf < checkEnd; lf = buffer_.find('\n', lf + 1)) {
      if (lf == 0 || buffer_[lf - 1] != '\r') {
        return fail(400, "A line of the request head ends in a bare LF instead of CRLF.");
      }
    }
    if (headEnd == std::string::npos) {
      scanned_ = window;
      if (buffer_.size() >= limits_.maxHeaderBytes) {
        return fail(
            431, fmt::format("The request head is larger than {} bytes.", limits_.maxHeaderBytes));
      }
      return state_;
    }
    scanned_ = 0;
    if (parseHead(headEnd) == State::kError) {
      return state_;
    }
    buffer_.erase(0, headEnd + kHeadEnd.size());
    inBody_ = true;
  }

  if (buffer_.size() < bodyLength_) {
    return state_;
  }
  current_.body = buffer_.substr(0, bodyLength_);
  buffer_.erase(0, bodyLength_);
  inBody_ = false;
  bodyLength_ = 0;
  state_ = State::kComplete;
  return state_;
}

ServerRequest RequestParser::take() {
  assert(state_ == State::kComplete && "RequestParser::take() without a complete request");
  ServerRequest request = std::move(current_);
  current_ = ServerRequest();
  if (state_ == State::kComplete) {
    state_ = State::kNeedMore;
  }
  return request;
}

RequestParser::State RequestParser::parseHead(std::size_t headEnd) {
  const std::string_view head = std::string_view(buffer_).substr(0, headEnd);
  current_ = ServerRequest();
  closeAfter_ = false;

  // Split into lines on CRLF; a CR or LF left inside a line is refused below.
  std::vector<std::string_view> lines;
  for (std::string_view rest = head;;) {
    const auto end = rest.find(kCrlf);
    lines.push_back(rest.substr(0, end));
    if (end == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(end + kCrlf.size());
  }

  // Request line: METHOD SP request-target SP HTTP-version, nothing else.
  const std::string_view requestLine = lines.front();
  if (hasControl(requestLine)) {
    return fail(400, "The request line contains a control character.");
  }
  const auto firstSpace = requestLine.find(' ');
  const auto secondSpace =
      firstSpace == std::string_view::npos ? firstSpace : requestLine.find(' ', firstSpace + 1);
  if (secondSpace == std::string_view::npos ||
      requestLine.find(' ', secondSpace + 1) != std::string_view::npos) {
    return fail(400, "The request line is not 'METHOD target HTTP/1.1'.");
  }
  const std::string_view method = requestLine.substr(0, firstSpace);
  const std::string_view target = requestLine.substr(firstSpace + 1, secondSpace - firstSpace - 1);
  const std::string_view version = requestLine.substr(secondSpace + 1);
  if (method.empty() ||
      !std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return fail(400, "The request method must be upper-case letters.");
  }
  if (!target.starts_with('/')) {
    return fail(400, "The request target must be a path starting with '/'.");
  }
  const bool versionShaped = version.size() == 8 && version.starts_with("HTTP/") &&
                             std::isdigit(static_cast<unsigned char>(version[5])) != 0 &&
                             version[6] == '.' &&
                             std::isdigit(static_cast<unsigned char>(version[7])) != 0;
  if (!versionShaped) {
    return fail(400, "The request line does not end with an HTTP version.");
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return fail(505, fmt::format("{} is not supported; use HTTP/1.1.", version));
  }
  const bool http10 = version == "HTTP/1.0";
  current_.method = std::string(method);
  current_.target = std::string(target);

  // Header fields.
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    if (line.starts_with(' ') || line.starts_with('\t')) {
      return fail(400, "The request uses obsolete header line folding.");
    }
    if (hasControl(line)) {
      return fail(400, "A request header contains a control character.");
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) {
      return fail(400, "A request header line has no colon.");
    }
    const std::string_view name = line.substr(0, colon);
    if (!isToken(name)) {
      return fail(400,
                  fmt::format("The request header name '{}' is not a valid token.", quote(name)));
    }
    current_.headers.emplace(lower(name), std::string(trimWhitespace(line.substr(colon + 1))));
  }

  // Body framing. Ambiguous framing is refused rather than guessed, so that a
  // proxy in front of us and we cannot disagree about where a request ends.
  const auto te = current_.headers.equal_range("transfer-encoding");
  const auto cl = current_.headers.equal_range("content-length");
  if (te.first != te.second && cl.first != cl.second) {
    return fail(400, "The request has both Transfer-Encoding and Content-Length.");
  }
  if (te.first != te.second) {
    const std::string value = lower(te.first->second);
    if (value == "chunked") {
      return fail(501,
                  "Chunked request bodies are not supported; send the body with a "
                  "Content-Length.");
    }
    return fail(501, fmt::format("The transfer encoding '{}' is not supported.", quote(value)));
  }
  bodyLength_ = 0;
  std::optional<std::string_view> lengthText;
  for (auto it = cl.first; it != cl.second; ++it) {
    const std::string_view value = it->second;
    if (value.empty() ||
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return fail(400, "The Content-Length of the request is not a number.");
    }
    // Compare numerically ("5" and "05" agree) without trusting the length.
    const std::string_view digits = value.find_first_not_of('0') == std::string_view::npos
                                        ? std::string_view("0")
                                        : value.substr(value.find_first_not_of('0'));
    if (lengthText && *lengthText != digits) {
      return fail(400, "The request has conflicting Content-Length headers.");
    }
    lengthText = digits;
  }
  if (lengthText) {
    std::size_t length = 0;
    for (char c : *lengthText) {
      length = length * 10 + static_cast<std::size_t>(c - '0');
      if (length > limits_.maxBodyBytes) {
        return fail(413, fmt::format("The request body is larger than the limit of {} bytes.",
                                     limits_.maxBodyBytes));
      }
    }
    bodyLength_ = length;
  }

  // Keep-alive: HTTP/1.1 keeps the connection unless asked to close; 1.0
  // closes unless asked to keep it.
  bool saysClose = false;
  bool saysKeepAlive = false;
  for (auto [it, end] = current_.headers.equal_range("connection"); it != end; ++it) {
    std::string_view rest = it->second;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string option = lower(trimWhitespace(rest.substr(0, comma)));
      saysClose = saysClose || option == "close";
      saysKeepAlive = saysKeepAlive || option == "keep-alive";
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
  }
  closeAfter_ = saysClose || (http10 && !saysKeepAlive);

  // Path and query.
  const auto question = target.find('?');
  if (!urlDecode(target.substr(0, question), current_.path, false)) {
    return fail(400, "The request path contains a malformed percent escape.");
  }
  if (current_.path.find('\0') != std::string::npos) {
    return fail(400, "The request path contains a NUL byte.");
  }
  if (isTraversal(current_.path)) {
    return fail(400, "The request path must not contain '..' segments.");
  }
  if (question != std::string_view::npos) {
    if (auto parsed = parseQuery(target.substr(question + 1), current_.query); !parsed)
      return fail(400, parsed.error().message());
  }
  return state_;
}

// ---- Router --------------------------------------------------------------------

// NOLINTNEXTLINE(performance-unnecessary-value-param): the header's signature.
void Router::add(std::string method, std::string pattern, Handler handler) {
  assert(pattern.starts_with('/') && "route patterns start with '/'");
  routes_.push_back(Route{std::move(method), splitPath(pattern), std::move(handler)});
}

ServerResponse Router::dispatch(ServerRequest& request) const {
  const std::vector<std::string> segments = splitPath(request.path);
  const auto matches = [&](const Route& route) {
    if (route.segments.size() != segments.size()) {
      return false;
    }
    for (std::size_t i = 0; i < segments.size(); ++i) {
      const std::string& want = route.segments[i];
      if (isParam(want) ? segments[i].empty() : want != segments[i]) {
        return false;
      }
    }
    return true;
  };
  // Of two matching routes, the one with a literal where the other has a
  // parameter at the first segment they differ wins: "/desktops/mine" beats
  // "/desktops/{id}".
  const auto moreSpecific = [](const Route& a, const Route& b) {
    for (std::size_t i = 0; i < a.segments.size(); ++i) {
      const bool aParam = isParam(a.segments[i]);
      const bool bParam = isParam(b.segments[i]);
      if (aParam != bParam) {
        return !aParam;
      }
    }
    return false;
  };

  const Route* best = nullptr;
  const Route* bestGet = nullptr;  // HEAD falls back to GET
  std::vector<std::string> allowed;
  for (const Route& route : routes_) {
    if (!matches(route)) {
      continue;
    }
    allowed.push_back(route.method);
    if (route.method == request.method && (best == nullptr || moreSpecific(route, *best))) {
      best = &route;
    }
    if (route.method == "GET" && (bestGet == nullptr || moreSpecific(route, *bestGet))) {
      bestGet = &route;
    }
  }
  if (best == nullptr && request.method == "HEAD") {
    best = bestGet;
  }
  if (best == nullptr) {
    if (allowed.empty()) {
      return ServerResponse::error(404, "not_found",
                                   fmt::format("No resource at {}.", request.path));
    }
    if (bestGet != nullptr) {
      allowed.emplace_back("HEAD");
    }
    std::sort(allowed.begin(), allowed.end());
    allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
    ServerResponse response = ServerResponse::error(
        405, "method_not_allowed",
        fmt::format("The method {} is not allowed on {}.", request.method, request.path));
    response.headers.emplace_back("Allow", fmt::format("{}", fmt::join(allowed, ", ")));
    return response;
  }

  request.pathParams.clear();
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const std::string& want = best->segments[i];
    if (isParam(want)) {
      request.pathParams[want.substr(1, want.size() - 2)] = segments[i];
    }
  }
  return best->handler(request);
}

}  // namespace aula::http
