// The broker over HTTPS, and how its answers read as the state machine's
// events: which status is a wrong password, a lockout, a quota, a session
// that ended; which transport failure is a wrong certificate or a wrong
// clock rather than a broker that is away.
#include <chrono>

#include <time.h>

#include "aula/common/crypto.hpp"
#include "aula/common/json.hpp"
#include "aula/common/log.hpp"
#include "aula/common/usb_policy.hpp"
#include "aula/greeter/ports.hpp"

namespace aula::greeter {

namespace {

using json::Json;

// A clock further than this from the broker's breaks TLS sooner or later
// (certificates issued "now" by the broker are not yet valid here).
constexpr std::int64_t kClockTolerance = 10 * 60;

std::string sentenceOf(const http::Response& response) {
  return http::errorFromResponse(response, "the Aula server").message();
}

std::string codeOf(const http::Response& response) {
  auto parsed = json::parse(response.body);
  if (!parsed || !parsed->is_object() || !parsed->contains("error"))
    return {};
  const Json& error = (*parsed)["error"];
  return error.is_object() && error.contains("code") && error["code"].is_string()
             ? error["code"].get<std::string>()
             : std::string();
}

// Seconds since the epoch of an HTTP date ("Sat, 05 Dec 2026 08:59:00 GMT"),
// or 0.
std::int64_t httpDate(const std::string& text) {
  std::tm tm{};
  const char* end = ::strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr)
    return 0;
  return static_cast<std::int64_t>(::timegm(&tm));
}

std::string dateText(std::int64_t seconds) {
  const auto time = static_cast<std::time_t>(seconds);
  std::tm tm{};
  ::gmtime_r(&time, &tm);
  char buffer[32] = {};
  (void)std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M UTC", &tm);
  return buffer;
}

// A JSON string literal of `text`, built by hand so that no copy of a
// password lingers in a JSON library's buffers.
void appendJsonString(std::string& out, std::string_view text) {
  out.push_back('"');
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        else
          out.push_back(c);
    }
  }
  out.push_back('"');
}

Notice transportNotice(const Error& error) {
  return error.code() == Errc::kTls ? Notice::kCertificateRejected : Notice::kBrokerUnreachable;
}

// A field of the broker's JSON, or the fallback when it is missing, null or
// of another type: an answer never throws.
std::string stringOr(const Json& object, const char* key, std::string fallback = {}) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::move(fallback);
}
std::int64_t integerOr(const Json& object, const char* key, std::int64_t fallback) {
  const auto it = object.find(key);
  return it != object.end() && it->is_number_integer() ? it->get<std::int64_t>() : fallback;
}
bool boolOr(const Json& object, const char* key, bool fallback) {
  const auto it = object.find(key);
  return it != object.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

// The JSON of a 200 answer to a request after login, or why there is none:
// the broker away, the session over (a 401, whatever the route), an error,
// or a body that is not JSON (`what` names it).
std::variant<Json, RequestFailed> jsonAfterLogin(const Result<http::Response>& answer,
                                                 std::string_view what) {
  if (!answer)
    return RequestFailed{transportNotice(answer.error()), answer.error().message()};
  if (answer->status == 401)
    return RequestFailed{Notice::kSessionEnded, sentenceOf(*answer)};
  if (answer->status != 200)
    return RequestFailed{Notice::kBrokerError, sentenceOf(*answer)};
  auto parsed = json::parse(answer->body);
  if (!parsed)
    return RequestFailed{Notice::kBrokerError, fmt::format("{} is not JSON.", what)};
  return std::move(parsed).value();
}

Desktop desktopOf(const Json& item) {
  Desktop desktop;
  desktop.id = integerOr(item, "id", 0);
  desktop.name = stringOr(item, "name");
  desktop.templateName = stringOr(item, "template");
  desktop.persistent = boolOr(item, "persistent", true);
  desktop.state =
      desktopStateFromName(stringOr(item, "state", "stopped")).value_or(DesktopState::kStopped);
  return desktop;
}

}  // namespace

namespace answers {

Event probe(const Result<http::Response>& answer, std::int64_t now, std::int64_t buildTime) {
  if (!answer) {
    if (answer.error().code() == Errc::kTls && buildTime > 0 && now < buildTime) {
      return BrokerFailed{Notice::kClockOff,
                          fmt::format("This PC says {}, before this image was even built ({}).",
                                      dateText(now), dateText(buildTime))};
    }
    return BrokerFailed{transportNotice(answer.error()), answer.error().message()};
  }
  const http::Response& response = *answer;
  if (const std::int64_t server = httpDate(response.header("date"));
      server > 0 && std::abs(server - now) > kClockTolerance) {
    return BrokerFailed{Notice::kClockOff, fmt::format("This PC says {}; the server says {}.",
                                                       dateText(now), dateText(server))};
  }
  if (response.status != 200)
    return BrokerFailed{Notice::kBrokerUnreachable, sentenceOf(response)};
  auto parsed = json::parse(response.body);
  if (!parsed || !parsed->is_object())
    return BrokerFailed{Notice::kBrokerUnreachable,
                        "The Aula server's greeter settings are not JSON; is this an Aula server?"};
  School school;
  school.name = stringOr(*parsed, "school_name");
  school.idleLogout = std::chrono::seconds(
      std::clamp<std::int64_t>(integerOr(*parsed, "idle_logout_seconds", 300), 30, 86400));
  if (const std::string logo = stringOr(*parsed, "logo_png"); !logo.empty()) {
    if (auto bytes = crypto::base64UrlDecode(logo))
      school.logoPng.assign(bytes->begin(), bytes->end());
  }
  return BrokerReady{std::move(school)};
}

Event login(const Result<http::Response>& answer) {
  if (!answer) {
    const Notice notice = transportNotice(answer.error());
    return LoginRefused{notice, answer.error().message(), 0};
  }
  const http::Response& response = *answer;
  switch (response.status) {
    case 200:
    case 201: {
      auto parsed = json::parse(response.body);
      if (!parsed || !parsed->is_object() || !parsed->contains("token"))
        return LoginRefused{Notice::kBrokerError, "The login answer has no session token.", 0};
      const auto found = parsed->find("user");
      const Json user = found != parsed->end() && found->is_object() ? *found : Json::object();
      std::string name = stringOr(user, "display_name");
      if (name.empty())
        name = stringOr(user, "username");
      return LoggedIn{std::move(name)};
    }
    case 401:
      return LoginRefused{Notice::kWrongPassword, sentenceOf(response), 0};
    case 403:
      return LoginRefused{Notice::kDisabled, sentenceOf(response), 0};
    case 429: {
      const int wait = std::atoi(response.header("retry-after").c_str());
      return LoginRefused{Notice::kLocked, sentenceOf(response), std::max(wait, 1)};
    }
    case 502:
    case 503:
    case 504:
      return LoginRefused{Notice::kBrokerUnreachable, sentenceOf(response), 0};
    default:
      return LoginRefused{Notice::kBrokerError, sentenceOf(response), 0};
  }
}

Event desktops(const Result<http::Response>& answer) {
  auto parsed = jsonAfterLogin(answer, "The list of desktops");
  if (auto* failed = std::get_if<RequestFailed>(&parsed))
    return std::move(*failed);
  const Json& list = std::get<Json>(parsed);
  if (!list.is_array())
    return RequestFailed{Notice::kBrokerError, "The list of desktops is not a JSON array."};
  DesktopsListed listed;
  for (const Json& item : list) {
    if (item.is_object())
      listed.desktops.push_back(desktopOf(item));
  }
  return listed;
}

Event console(const Result<http::Response>& answer, std::int64_t desktopId) {
  if (!answer) {
    const Notice notice = transportNotice(answer.error());
    return ConsoleRefused{
        notice == Notice::kCertificateRejected ? notice : Notice::kBrokerUnreachable,
        answer.error().message()};
  }
  const http::Response& response = *answer;
  if (response.status == 401)
    return ConsoleRefused{Notice::kSessionEnded, sentenceOf(response)};
  if (response.status == 403 && codeOf(response) == "quota_exceeded")
    return ConsoleRefused{Notice::kQuotaReached, sentenceOf(response)};
  if (response.status != 200)
    return ConsoleRefused{Notice::kStartFailed, sentenceOf(response)};
  auto parsed = json::parse(response.body);
  if (!parsed || !parsed->is_object())
    return ConsoleRefused{Notice::kStartFailed, "The console answer is not JSON."};
  const Json& j = *parsed;
  Console console;
  console.desktopId = desktopId;
  console.host = stringOr(j, "host");
  console.tlsPort = static_cast<int>(integerOr(j, "tls_port", 0));
  console.port = static_cast<int>(integerOr(j, "port", 0));
  console.hostSubject = stringOr(j, "host_subject");
  console.caPem = stringOr(j, "ca");
  // A broker from before USB policies, or one that names none: no devices.
  console.usb = stringOr(j, "usb");
  if (!usbRedirFilter(console.usb))
    console.usb = "none";
  if (j.contains("ticket") && j["ticket"].is_string()) {
    // The JSON library's copy goes with `parsed`; ours is a Secret.
    console.ticket = Secret(j["ticket"].get_ref<const std::string&>());
  }
  if (console.host.empty() || (console.tlsPort == 0 && console.port == 0))
    return ConsoleRefused{Notice::kStartFailed, "The console answer names no host and port."};
  return ConsoleReady{std::move(console)};
}

Event stopped(const Result<http::Response>& answer) {
  auto parsed = jsonAfterLogin(answer, "The stop answer");
  if (auto* failed = std::get_if<RequestFailed>(&parsed))
    return std::move(*failed);
  const Json& object = std::get<Json>(parsed);
  if (!object.is_object())
    return RequestFailed{Notice::kBrokerError, "The stop answer is not a JSON object."};
  const Desktop desktop = desktopOf(object);
  return DesktopChanged{desktop.id, desktop.state};
}

}  // namespace answers

namespace {

http::ClientOptions clientOptions(const BrokerAddress& address) {
  http::ClientOptions options;
  options.connectTimeout = std::chrono::seconds(5);
  // A start may take the broker up to 180 s.
  options.totalTimeout = std::chrono::seconds(200);
  options.userAgent = "aula-greeter/0.1";
  if (!address.caPem.empty())
    options.tls.caPem = address.caPem;
  else
    options.tls.caFingerprint = address.caFingerprint;
  return options;
}

std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

HttpBroker::HttpBroker(BrokerAddress address, std::int64_t buildTime)
    : address_(std::move(address)),
      buildTime_(buildTime),
      client_(clientOptions(address_)),
      streamClient_(clientOptions(address_)) {
  while (!address_.url.empty() && address_.url.back() == '/')
    address_.url.pop_back();
}

Result<http::Response> HttpBroker::call(std::string_view method, const std::string& path,
                                        std::string body) {
  http::Request request;
  request.method = std::string(method);
  request.url = address_.url + path;
  std::string authorization;
  {
    std::lock_guard lock(tokenMutex_);
    if (!token_.empty())
      authorization = fmt::format("Bearer {}", token_.view());
  }
  if (!authorization.empty())
    request.headers.emplace_back("Authorization", authorization);
  if (!body.empty() || method == "POST")
    request.headers.emplace_back("Content-Type", "application/json");
  request.body = std::move(body);
  auto answer = client_.send(request);
  wipe(request.body);
  wipe(authorization);
  for (auto& [name, value] : request.headers)
    wipe(value);
  return answer;
}

Event HttpBroker::probe() {
  return answers::probe(call("GET", "/api/v1/greeter"), unixNow(), buildTime_);
}

Event HttpBroker::logIn(std::string_view username, const Secret& password) {
  std::string body = "{\"username\":";
  appendJsonString(body, username);
  body += ",\"password\":";
  appendJsonString(body, password.view());
  body += "}";
  auto answer = call("POST", "/api/v1/session", std::move(body));
  Event event = answers::login(answer);
  if (answer && (answer->status == 200 || answer->status == 201)) {
    auto parsed = json::parse(answer->body);
    if (parsed && parsed->is_object() && (*parsed)["token"].is_string()) {
      std::lock_guard lock(tokenMutex_);
      token_ = Secret((*parsed)["token"].get_ref<const std::string&>());
    }
    wipe(answer->body);
  }
  return event;
}

Event HttpBroker::listDesktops() {
  return answers::desktops(call("GET", "/api/v1/desktops"));
}

Event HttpBroker::console(std::int64_t desktopId, bool resume) {
  if (resume) {
    // Only a desktop that still runs gets a fresh ticket; one that stopped
    // is reported as such and not started again.
    auto current = call("GET", fmt::format("/api/v1/desktops/{}", desktopId));
    if (current && current->status == 200) {
      auto parsed = json::parse(current->body);
      if (parsed && parsed->is_object()) {
        const Desktop desktop = desktopOf(*parsed);
        if (desktop.state != DesktopState::kRunning)
          return DesktopChanged{desktopId, desktop.state};
        // Someone asked for a console after ours: a teacher, or this
        // student on another PC. Taking it back would throw them out.
        if (auto ours = consoleNumbers_.find(desktopId);
            ours != consoleNumbers_.end() && integerOr(*parsed, "consoles", 0) > ours->second)
          return SessionEnded{SessionEnd::kTakenOver, {}};
      }
    } else if (!current || current->status != 404) {
      return answers::console(current, desktopId);
    }
  }
  auto answer = call("POST", fmt::format("/api/v1/desktops/{}/console", desktopId));
  Event event = answers::console(answer, desktopId);
  if (answer && answer->status == 200) {
    if (auto parsed = json::parse(answer->body); parsed && parsed->is_object())
      consoleNumbers_[desktopId] = integerOr(*parsed, "console_number", 0);
  }
  if (answer)
    wipe(answer->body);
  return event;
}

Event HttpBroker::stop(std::int64_t desktopId) {
  return answers::stopped(call("POST", fmt::format("/api/v1/desktops/{}/stop", desktopId)));
}

void HttpBroker::logOut() {
  {
    std::lock_guard lock(tokenMutex_);
    if (token_.empty())
      return;
  }
  auto answer = call("DELETE", "/api/v1/session");
  if (!answer)
    log::warn("Logging out at the Aula server failed: {}", answer.error().message());
  std::lock_guard lock(tokenMutex_);
  token_.clear();
}

Status HttpBroker::watch(const std::function<void(Event)>& onEvent,
                         const std::function<bool()>& keepGoing) {
  http::Request request;
  request.url = address_.url + "/api/v1/events";
  std::string authorization;
  {
    std::lock_guard lock(tokenMutex_);
    if (token_.empty())
      return makeError(Errc::kUnauthenticated, "Log in before following the event stream.");
    authorization = fmt::format("Bearer {}", token_.view());
  }
  request.headers.emplace_back("Authorization", authorization);
  request.headers.emplace_back("Accept", "text/event-stream");
  request.timeout = std::chrono::hours(1);  // then it is opened again
  EventStreamParser parser;
  auto status = streamClient_.stream(
      request,
      [&](std::string_view chunk) {
        for (const auto& message : parser.feed(chunk)) {
          if (message.event == "events.gap") {
            // Events were missed: the whole list again.
            http::Request list = request;
            list.url = address_.url + "/api/v1/desktops";
            list.timeout = std::chrono::seconds(30);
            list.headers.pop_back();
            onEvent(answers::desktops(streamClient_.send(list)));
            continue;
          }
          if (auto event = eventOf(message))
            onEvent(std::move(*event));
        }
        return keepGoing();
      },
      keepGoing);
  wipe(authorization);
  for (auto& [name, value] : request.headers)
    wipe(value);
  return status;
}

std::vector<EventStreamParser::Message> EventStreamParser::feed(std::string_view chunk) {
  std::vector<Message> messages;
  buffer_.append(chunk);
  // Events end with a blank line; CRLF is allowed.
  std::erase(buffer_, '\r');
  std::size_t end = 0;
  while ((end = buffer_.find("\n\n")) != std::string::npos) {
    const std::string block = buffer_.substr(0, end);
    buffer_.erase(0, end + 2);
    Message message;
    std::size_t at = 0;
    while (at <= block.size()) {
      std::size_t next = block.find('\n', at);
      if (next == std::string::npos)
        next = block.size();
      const std::string_view line(block.data() + at, next - at);
      at = next + 1;
      if (line.empty() || line.front() == ':')
        continue;  // a comment: the keep-alive
      const auto colon = line.find(':');
      const std::string_view field = line.substr(0, colon);
      std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);
      if (field == "event") {
        message.event = value;
      } else if (field == "data") {
        if (!message.data.empty())
          message.data += '\n';
        message.data += value;
      }
    }
    if (!message.event.empty() || !message.data.empty())
      messages.push_back(std::move(message));
  }
  // A stream that never ends a block is not allowed to grow without end.
  if (buffer_.size() > 1024 * 1024)
    buffer_.clear();
  return messages;
}

std::optional<Event> eventOf(const EventStreamParser::Message& message) {
  auto parsed = json::parse(message.data);
  if (!parsed || !parsed->is_object())
    return std::nullopt;
  if (message.event == "desktop.state") {
    auto state = desktopStateFromName(stringOr(*parsed, "state"));
    const std::int64_t id = integerOr(*parsed, "id", 0);
    if (!state || id == 0)
      return std::nullopt;
    return Event{DesktopChanged{id, *state}};
  }
  if (message.event == "session.ended")
    return Event{RequestFailed{Notice::kSessionEnded, stringOr(*parsed, "reason")}};
  return std::nullopt;
}

}  // namespace aula::greeter
