// The API's shared state and route helpers (not a public header): the
// authenticated, body and /{id} route forms every area's routes use.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <string>

#include "aula/broker/api.hpp"

#include "api/responses.hpp"

namespace aula::broker {

using http::ServerRequest;
using http::ServerResponse;
using namespace api;

struct Api::Impl {
  Impl(Broker& b, EventBus& e, ApiOptions o) : broker(b), events(e), options(std::move(o)) {}

  Broker& broker;
  EventBus& events;
  ApiOptions options;
  http::Router router;
  std::mutex metricsMutex;
  std::map<std::string, std::uint64_t> requests;  // "method status" -> count
  std::atomic<std::uint64_t> eventStreams{0};

  Result<Json> body(const ServerRequest& request) {
    if (request.body.empty())
      return Json::object();
    auto type = request.header("content-type");
    if (type.rfind("application/json", 0) != 0) {
      return Error(Errc::kInvalidArgument,
                   "The body must be JSON, sent with 'Content-Type: application/json'.");
    }
    auto parsed = AULA_TRY(json::parse(
        request.body, {.maxBytes = options.maxBodyBytes, .maxDepth = options.maxJsonDepth}));
    if (!parsed.is_object())
      return Error(Errc::kInvalidArgument, "The body must be a JSON object.");
    return parsed;
  }

  Result<Actor> actor(const ServerRequest& request) {
    auto header = request.header("authorization");
    if (header.rfind("Bearer ", 0) != 0) {
      return Error(Errc::kUnauthenticated, "Log in first: send 'Authorization: Bearer <token>'.");
    }
    return broker.auth.authenticate(header.substr(7), request.remoteAddress);
  }

  // Adds a route whose handler gets the authenticated actor.
  template <typename F>
  // NOLINTNEXTLINE(performance-unnecessary-value-param): both are moved into the router
  void authed(std::string method, std::string pattern, F f) {
    router.add(std::move(method), std::move(pattern),
               [this, f](ServerRequest& request) -> ServerResponse {
                 auto a = actor(request);
                 if (!a)
                   return errorResponse(a.error());
                 return f(*a, request);
               });
  }

  // A route that only reads: the session check and the answer share one read
  // transaction (one pooled connection and one snapshot per request). For
  // what lab PCs and browsers ask for again and again, such as the list of
  // desktops.
  template <typename F>
  // NOLINTNEXTLINE(performance-unnecessary-value-param): both are moved into the router
  void authedRead(std::string method, std::string pattern, F f) {
    router.add(
        std::move(method), std::move(pattern), [this, f](ServerRequest& request) -> ServerResponse {
          auto header = request.header("authorization");
          if (header.rfind("Bearer ", 0) != 0)
            return errorResponse(actor(request).error());
          const std::string_view token = std::string_view(header).substr(7);
          AuthService::Session session;
          auto answer = broker.context.db.transactValue<Json>(
              db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
                session = AULA_TRY(broker.auth.findSession(tx, token, request.remoteAddress));
                return f(session.actor, tx, request);
              });
          if (!answer)
            return errorResponse(answer.error());
          if (auto touched = broker.auth.touch(session); !touched)
            return errorResponse(touched.error());
          return ok(*answer);
        });
  }

  // A route with a JSON body.
  template <typename F>
  void authedBody(std::string method, std::string pattern, F f) {
    authed(std::move(method), std::move(pattern),
           [this, f](const Actor& a, ServerRequest& request) -> ServerResponse {
             auto b = body(request);
             if (!b)
               return errorResponse(b.error());
             return f(a, request, *b);
           });
  }

  // A route on /{id}.
  template <typename F>
  void authedId(std::string method, std::string pattern, F f) {
    authed(std::move(method), std::move(pattern),
           [f](const Actor& a, ServerRequest& request) -> ServerResponse {
             auto id = pathId(request);
             if (!id)
               return errorResponse(id.error());
             return f(a, *id, request);
           });
  }

  template <typename F>
  void authedIdBody(std::string method, std::string pattern, F f) {
    authedBody(std::move(method), std::move(pattern),
               [f](const Actor& a, ServerRequest& request, const Json& b) -> ServerResponse {
                 auto id = pathId(request);
                 if (!id)
                   return errorResponse(id.error());
                 return f(a, *id, b);
               });
  }

  void routes();
  // One per area, each in its own file (api/<area>_routes.cpp).
  void sessionRoutes();
  void orgRoutes();
  void templateRoutes();
  void desktopRoutes();
  void hostRoutes();
  void enrolmentRoutes();
  void bootHostRoutes();
  void bootRoutes();
  ServerResponse eventStream(const Actor& actor, ServerRequest& request);
  ServerResponse metrics();
};

}  // namespace aula::broker
