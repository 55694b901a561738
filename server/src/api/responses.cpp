// The answers every route gives: errors as the API's JSON (internal details
// only in the log), results as 200/201 JSON or 204, and path ids.
#include "api/responses.hpp"

#include <charconv>
#include <cstdlib>

#include "aula/common/log.hpp"

namespace aula::broker::api {

using http::ServerRequest;
using http::ServerResponse;

ServerResponse errorResponse(const Error& error) {
  int status = http::httpStatusFor(error.code());
  std::string message = error.message();
  if (status == 500) {
    // Internal details go to the log, not to the client.
    log::error("Request failed: {}", error.message());
    message = "The broker hit an internal error; the admin can find the details in its log.";
  }
  auto response = ServerResponse::error(status, errcName(error.code()), message);
  if (error.code() == Errc::kRateLimited) {
    // "try again in N s" carries N; Retry-After says it to machines.
    auto pos = message.find("try again in ");
    if (pos != std::string::npos) {
      response.headers.emplace_back("Retry-After",
                                    std::to_string(std::atoi(message.c_str() + pos + 13)));
    }
  }
  return response;
}

ServerResponse ok(Result<Json> result, int status) {
  if (!result)
    return errorResponse(result.error());
  return ServerResponse::json(status, result->dump());
}

ServerResponse done(const Status& status) {
  if (!status)
    return errorResponse(status.error());
  return ServerResponse{.status = 204};
}

Result<std::int64_t> pathId(const ServerRequest& request, const std::string& name) {
  const auto& text = request.pathParams.at(name);
  std::int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value <= 0) {
    return makeError(Errc::kInvalidArgument, "The id '{}' in the path is not a positive number.",
                     text.substr(0, 40));
  }
  return value;
}

bool wantsForce(const ServerRequest& r) {
  auto it = r.query.find("force");
  return it != r.query.end() && (it->second == "1" || it->second == "true" || it->second.empty());
}

}  // namespace aula::broker::api
