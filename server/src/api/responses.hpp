// What every route file shares (not a public header): the one way a Result
// becomes a response, and the parsing of path ids and ?force.
#pragma once

#include <cstdint>
#include <string>

#include "aula/common/http_server.hpp"
#include "aula/common/json.hpp"
#include "aula/common/result.hpp"

namespace aula::broker::api {

using json::Json;

// An error as the API's JSON body with its HTTP status; a 500's details go
// to the log, not to the client. kRateLimited carries Retry-After.
http::ServerResponse errorResponse(const Error& error);
// A result as JSON with `status`, or its error.
http::ServerResponse ok(Result<Json> result, int status = 200);
// 204, or the error.
http::ServerResponse done(const Status& status);
// The positive id in the path parameter `name`.
Result<std::int64_t> pathId(const http::ServerRequest& request, const std::string& name = "id");
// Whether ?force (or force=1/true) was given.
bool wantsForce(const http::ServerRequest& r);

}  // namespace aula::broker::api
