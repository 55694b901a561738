// The broker's HTTP API (/api/v1, /metrics, /healthz) over a Broker: routes,
// authentication from the Authorization header, JSON bodies in and out, and
// one mapping from error codes to HTTP statuses. Documented in docs/api.md.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "aula/broker/broker.hpp"
#include "aula/common/http_server.hpp"

namespace aula::broker {

struct ApiOptions {
  std::string caPem;  // handed out in console descriptors
  std::size_t maxBodyBytes = 1024 * 1024;
  int maxJsonDepth = 32;
  std::chrono::seconds eventKeepAlive{15};
};

// HTTP status for an error code.
int httpStatus(Errc code);

class Api {
 public:
  Api(Broker& broker, EventBus& events, ApiOptions options);
  ~Api();

  http::ServerResponse handle(http::ServerRequest& request);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::broker
