// Routes of network boot: the public ones a booting PC uses (its iPXE
// script, the image files) and the admin's images, channels and pins.
#include <charconv>

#include "aula/common/log.hpp"

#include "api/api_impl.hpp"
#include "core/policy.hpp"

namespace aula::broker {

void Api::Impl::bootRoutes() {
  auto& b = broker;
  // A PC's firmware asks here; it cannot log in or check our CA, so what it
  // gets holds no secret: which image to load, from where, and the CA's
  // fingerprint it will check the broker against afterwards.
  router.add("GET", "/boot/ipxe", [&b](ServerRequest& r) {
    const BootRequest request = bootRequestFrom(r.query, std::string(r.header("host")));
    auto answer = b.bootHosts.ipxe(request);
    if (request.hasMac)
      logBootAnswer(request, answer, r.remoteAddress);
    auto response = ServerResponse::text(200, std::move(answer.script), "text/plain");
    // A script depends on the moment (channels, pins): never from a cache.
    response.headers.emplace_back("Cache-Control", "no-store");
    return response;
  });
  router.add("GET", "/boot/images/{flavour}/{version}/{file}", [&b](ServerRequest& r) {
    auto served = b.images.servedFile(r.pathParams.at("flavour"), r.pathParams.at("version"),
                                      r.pathParams.at("file"));
    if (!served)
      return errorResponse(served.error());
    // A version's files never change, so any cache between the broker and
    // a remote site's PCs may keep them for good.
    return http::serveFile(
        r, served->path,
        {.cacheControl = "public, max-age=31536000, immutable",
         .etag = served->sha256.empty() ? "" : fmt::format("\"sha256-{}\"", served->sha256)});
  });

  authed("GET", "/api/v1/images",
         [&b](const Actor& a, ServerRequest&) { return ok(b.images.list(a)); });
  authedBody("POST", "/api/v1/images", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.images.add(a, j), 201);
  });
  authed("PUT", "/api/v1/images/{flavour}/{version}/files/{file}",
         [&b](const Actor& a, ServerRequest& r) {
           // Rights before the body's form, so a student learns only "no".
           if (auto allowed = detail::requireAdmin(a); !allowed)
             return errorResponse(allowed.error());
           if (r.header("content-type") != "application/octet-stream") {
             return errorResponse(
                 Error(Errc::kInvalidArgument,
                       "Send the file's bytes with 'Content-Type: application/octet-stream'."));
           }
           std::uint64_t offset = 0;
           const std::string text = r.query.contains("offset") ? r.query.at("offset") : "0";
           auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), offset);
           if (ec != std::errc() || end != text.data() + text.size()) {
             return errorResponse(Error(
                 Errc::kInvalidArgument,
                 fmt::format("The offset '{}' is not a number of bytes.", text.substr(0, 20))));
           }
           return ok(b.images.upload(a, r.pathParams.at("flavour"), r.pathParams.at("version"),
                                     r.pathParams.at("file"), offset, r.body));
         });
  authed("DELETE", "/api/v1/images/{flavour}/{version}", [&b](const Actor& a, ServerRequest& r) {
    return done(b.images.remove(a, r.pathParams.at("flavour"), r.pathParams.at("version")));
  });
  authed("GET", "/api/v1/image-channels",
         [&b](const Actor& a, ServerRequest&) { return ok(b.images.channels(a)); });
  authedBody("POST", "/api/v1/image-channels/{channel}/promote",
             [&b](const Actor& a, ServerRequest& r, const Json& j) {
               return ok(b.images.promote(a, r.pathParams.at("channel"), j));
             });
  authedBody("POST", "/api/v1/image-channels/{channel}/rollback",
             [&b](const Actor& a, ServerRequest& r, const Json& j) {
               return ok(b.images.rollback(a, r.pathParams.at("channel"), j));
             });
  authedBody("POST", "/api/v1/boot-hosts/pin", [&b](const Actor& a, ServerRequest&, const Json& j) {
    return ok(b.images.pin(a, j));
  });
}

}  // namespace aula::broker
