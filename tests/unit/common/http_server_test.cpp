// The HTTP server's request parser and router, without sockets: well-formed
// requests, pipelining, every refusal with its status and sentence,
// percent-decoding, and how routes are chosen.
#include "aula/common/http_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace aula::http {
namespace {

using State = RequestParser::State;
using namespace std::string_view_literals;

// Feeds a whole request and expects it to complete.
ServerRequest parseOne(std::string_view bytes, ParseLimits limits = {}) {
  RequestParser parser(limits);
  EXPECT_EQ(parser.feed(bytes), State::kComplete) << parser.errorMessage();
  return parser.take();
}

// Feeds bytes and expects a refusal; returns the parser to inspect.
RequestParser refuse(std::string_view bytes, int status, ParseLimits limits = {}) {
  RequestParser parser(limits);
  EXPECT_EQ(parser.feed(bytes), State::kError);
  EXPECT_EQ(parser.errorStatus(), status) << parser.errorMessage();
  EXPECT_FALSE(parser.errorMessage().empty());
  EXPECT_EQ(parser.errorMessage().back(), '.') << "a message is a sentence";
  return parser;
}

std::string errorCodeOf(const ServerResponse& response) {
  return nlohmann::json::parse(response.body)["error"]["code"].get<std::string>();
}

std::string errorMessageOf(const ServerResponse& response) {
  return nlohmann::json::parse(response.body)["error"]["message"].get<std::string>();
}

// ---- parser: good requests ------------------------------------------------------

TEST(RequestParserTest, ParsesGetWithHeaders) {
  auto request = parseOne(
      "GET /api/v1/desktops?owner=alice HTTP/1.1\r\n"
      "Host: example\r\n"
      "X-Custom-Header:   spaced value \t\r\n"
      "Accept: a\r\n"
      "accept: b\r\n"
      "\r\n");
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.target, "/api/v1/desktops?owner=alice");
  EXPECT_EQ(request.path, "/api/v1/desktops");
  EXPECT_EQ(request.query.at("owner"), "alice");
  EXPECT_EQ(request.header("HOST"), "example");
  EXPECT_EQ(request.header("x-custom-header"), "spaced value");
  EXPECT_EQ(request.headers.count("accept"), 2U);
  EXPECT_EQ(request.header("missing"), "");
  EXPECT_TRUE(request.body.empty());
}

TEST(RequestParserTest, ParsesPostBodyFedByteByByte) {
  const std::string bytes =
      "POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world";
  RequestParser parser;
  for (std::size_t i = 0; i + 1 < bytes.size(); ++i) {
    ASSERT_EQ(parser.feed(bytes.substr(i, 1)), State::kNeedMore) << "at byte " << i;
  }
  ASSERT_EQ(parser.feed(bytes.substr(bytes.size() - 1)), State::kComplete);
  auto request = parser.take();
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.body, "hello world");
  EXPECT_TRUE(parser.idle());
  EXPECT_FALSE(parser.closeAfter());
}

TEST(RequestParserTest, PipelinedRequestsComeOutOneByOne) {
  RequestParser parser;
  ASSERT_EQ(parser.feed("GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                        "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                        "GET /thr"),
            State::kComplete);
  EXPECT_EQ(parser.take().path, "/one");
  ASSERT_EQ(parser.feed({}), State::kComplete);
  auto second = parser.take();
  EXPECT_EQ(second.path, "/two");
  EXPECT_EQ(second.body, "abc");
  EXPECT_EQ(parser.feed({}), State::kNeedMore);
  EXPECT_FALSE(parser.idle());
  ASSERT_EQ(parser.feed("ee HTTP/1.1\r\n\r\n"), State::kComplete);
  auto third = parser.take();
  EXPECT_EQ(third.path, "/three");
  EXPECT_TRUE(third.headers.empty());
  EXPECT_TRUE(parser.idle());
}

TEST(RequestParserTest, EmptyLinesBeforeARequestAreIgnored) {
  auto request = parseOne("\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(request.path, "/");
}

TEST(RequestParserTest, ConnectionHandling) {
  {
    RequestParser parser;
    ASSERT_EQ(parser.feed("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"),
              State::kComplete);
    EXPECT_TRUE(parser.closeAfter());
  }
  {
    RequestParser parser;
    ASSERT_EQ(parser.feed("GET / HTTP/1.0\r\n\r\n"), State::kComplete);
    EXPECT_TRUE(parser.closeAfter()) << "HTTP/1.0 closes by default";
  }
  {
    RequestParser parser;
    ASSERT_EQ(parser.feed("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), State::kComplete);
    EXPECT_FALSE(parser.closeAfter());
  }
  {
    // The flag belongs to the request just parsed, not to an earlier one.
    RequestParser parser;
    ASSERT_EQ(parser.feed("GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
              State::kComplete);
    EXPECT_TRUE(parser.closeAfter());
    parser.take();
    ASSERT_EQ(parser.feed({}), State::kComplete);
    EXPECT_FALSE(parser.closeAfter());
  }
}

TEST(RequestParserTest, RepeatedEqualContentLengthIsAccepted) {
  auto request = parseOne("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\nok");
  EXPECT_EQ(request.body, "ok");
}

TEST(RequestParserTest, BodyAtTheLimitIsAccepted) {
  auto request = parseOne("POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
                          {.maxHeaderBytes = 1024, .maxBodyBytes = 4});
  EXPECT_EQ(request.body, "abcd");
}

// ---- parser: decoding -----------------------------------------------------------

TEST(RequestParserTest, PathIsPercentDecodedAndTargetKept) {
  auto request = parseOne("GET /files/a%20b%2Fc+d HTTP/1.1\r\n\r\n");
  EXPECT_EQ(request.path, "/files/a b/c+d") << "'+' is literal in a path";
  EXPECT_EQ(request.target, "/files/a%20b%2Fc+d");
}

TEST(RequestParserTest, QueryIsSplitAndDecoded) {
  auto request =
      parseOne("GET /s?q=hello+world&empty=&flag&x=%C3%A9&&a=1&a=2&k%3D=v%26w HTTP/1.1\r\n\r\n");
  EXPECT_EQ(request.path, "/s");
  EXPECT_EQ(request.query.at("q"), "hello world");
  EXPECT_EQ(request.query.at("empty"), "");
  EXPECT_EQ(request.query.at("flag"), "");
  EXPECT_EQ(request.query.at("x"), "\xC3\xA9");
  EXPECT_EQ(request.query.at("a"), "1") << "the first of repeated parameters wins";
  EXPECT_EQ(request.query.at("k="), "v&w");
  EXPECT_EQ(request.query.size(), 6U);
}

TEST(UrlDecodeTest, DecodesAndRefusesMalformedEscapes) {
  std::string out;
  EXPECT_TRUE(urlDecode("a%41%6a+b", out, false));
  EXPECT_EQ(out, "aAj+b");
  EXPECT_TRUE(urlDecode("a+b", out, true));
  EXPECT_EQ(out, "a b");
  EXPECT_TRUE(urlDecode("", out, true));
  EXPECT_EQ(out, "");
  EXPECT_TRUE(urlDecode("%00", out, false));
  EXPECT_EQ(out, std::string(1, '\0'));
  EXPECT_FALSE(urlDecode("%", out, false));
  EXPECT_FALSE(urlDecode("ab%4", out, false));
  EXPECT_FALSE(urlDecode("%G1", out, false));
  EXPECT_FALSE(urlDecode("%1G", out, false));
}

// ---- parser: refusals -----------------------------------------------------------

TEST(RequestParserTest, MalformedRequestLinesAre400) {
  refuse("get / HTTP/1.1\r\n\r\n", 400);
  refuse("G3T / HTTP/1.1\r\n\r\n", 400);
  refuse(" / HTTP/1.1\r\n\r\n", 400);
  refuse("GET  / HTTP/1.1\r\n\r\n", 400);
  refuse("GET / HTTP/1.1 \r\n\r\n", 400);
  refuse("GET /\r\n\r\n", 400);
  refuse("GET / HTTX/1.1\r\n\r\n", 400);
  refuse("GET / HTTP/11\r\n\r\n", 400);
  EXPECT_EQ(refuse("GET http://example/ HTTP/1.1\r\n\r\n", 400).errorMessage(),
            "The request target must be a path starting with '/'.");
  EXPECT_EQ(refuse("OPTIONS * HTTP/1.1\r\n\r\n", 400).errorMessage(),
            "The request target must be a path starting with '/'.");
  EXPECT_EQ(refuse("get / HTTP/1.1\r\n\r\n", 400).errorMessage(),
            "The request method must be upper-case letters.");
}

TEST(RequestParserTest, BadHeadersAre400) {
  EXPECT_EQ(refuse("GET / HTTP/1.1\r\nHost: a\r\n  folded\r\n\r\n", 400).errorMessage(),
            "The request uses obsolete header line folding.");
  EXPECT_EQ(refuse("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400).errorMessage(),
            "The request header name 'Host ' is not a valid token.");
  EXPECT_EQ(refuse("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400).errorMessage(),
            "A request header line has no colon.");
  EXPECT_EQ(refuse("GET / HTTP/1.1\r\n: empty\r\n\r\n", 400).errorMessage(),
            "The request header name '' is not a valid token.");
  // A bare LF inside the head would let a lenient proxy see another header.
  EXPECT_EQ(refuse("GET / HTTP/1.1\r\nA: b\nContent-Length: 5\r\n\r\n", 400).errorMessage(),
            "A line of the request head ends in a bare LF instead of CRLF.");
  EXPECT_EQ(refuse("GET /\n HTTP/1.1\r\n\r\n", 400).errorMessage(),
            "A line of the request head ends in a bare LF instead of CRLF.");
  EXPECT_EQ(refuse("GET /\r HTTP/1.1\r\n\r\n", 400).errorMessage(),
            "The request line contains a control character.");
  EXPECT_EQ(refuse("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400).errorMessage(),
            "A request header contains a control character.");
  refuse("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n"sv, 400);
}

TEST(RequestParserTest, LfOnlyRequestIsRefusedWithoutWaitingForCrlf) {
  RequestParser parser;
  EXPECT_EQ(parser.feed("GET / HTTP/1.1\r"), State::kNeedMore);
  EXPECT_EQ(parser.feed("\nHost: x"), State::kNeedMore);
  EXPECT_EQ(parser.feed("\n"), State::kError);
  EXPECT_EQ(parser.errorStatus(), 400);
  refuse("GET / HTTP/1.1\n\n", 400);
  refuse("\nGET / HTTP/1.1\r\n\r\n", 400);
}

TEST(RequestParserTest, UnsupportedVersionIs505) {
  EXPECT_EQ(refuse("GET / HTTP/2.0\r\n\r\n", 505).errorMessage(),
            "HTTP/2.0 is not supported; use HTTP/1.1.");
  refuse("GET / HTTP/0.9\r\n\r\n", 505);
  refuse("GET / HTTP/1.2\r\n\r\n", 505);
}

TEST(RequestParserTest, OversizedHeadIs431) {
  const ParseLimits limits{.maxHeaderBytes = 64, .maxBodyBytes = 1024};
  RequestParser parser(limits);
  EXPECT_EQ(parser.feed("GET / HTTP/1.1\r\nX-Long: "), State::kNeedMore);
  EXPECT_EQ(parser.feed(std::string(100, 'a')), State::kError);
  EXPECT_EQ(parser.errorStatus(), 431);
  EXPECT_EQ(parser.errorMessage(), "The request head is larger than 64 bytes.");
  // Complete but still too large.
  refuse("GET / HTTP/1.1\r\nX-Long: " + std::string(100, 'a') + "\r\n\r\n", 431, limits);
  // The default limit, as the message names it.
  EXPECT_EQ(refuse("GET / HTTP/1.1\r\nX: " + std::string(20000, 'a'), 431).errorMessage(),
            "The request head is larger than 16384 bytes.");
}

TEST(RequestParserTest, HeadExactlyAtTheLimitIsAccepted) {
  const std::string head = "GET / HTTP/1.1\r\nX: " + std::string(10, 'a') + "\r\n\r\n";
  parseOne(head, {.maxHeaderBytes = head.size(), .maxBodyBytes = 0});
  refuse(head, 431, {.maxHeaderBytes = head.size() - 1, .maxBodyBytes = 0});
}

TEST(RequestParserTest, OversizedBodyIs413) {
  const ParseLimits limits{.maxHeaderBytes = 1024, .maxBodyBytes = 10};
  EXPECT_EQ(refuse("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 413, limits).errorMessage(),
            "The request body is larger than the limit of 10 bytes.");
  // A length that would overflow any integer is still just too large.
  refuse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999999\r\n\r\n", 413, limits);
}

TEST(RequestParserTest, BadContentLengthIs400) {
  EXPECT_EQ(refuse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400).errorMessage(),
            "The Content-Length of the request is not a number.");
  refuse("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400);
  refuse("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400);
  refuse("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400);
  refuse("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", 400);
  EXPECT_EQ(refuse("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400)
                .errorMessage(),
            "The request has conflicting Content-Length headers.");
}

TEST(RequestParserTest, TransferEncodingIs501OrWithContentLength400) {
  EXPECT_EQ(refuse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501).errorMessage(),
            "Chunked request bodies are not supported; send the body with a Content-Length.");
  EXPECT_EQ(
      refuse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501).errorMessage(),
      "The transfer encoding 'gzip, chunked' is not supported.");
  EXPECT_EQ(
      refuse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400)
          .errorMessage(),
      "The request has both Transfer-Encoding and Content-Length.");
}

TEST(RequestParserTest, BadPathsAre400) {
  EXPECT_EQ(refuse("GET /a%zz HTTP/1.1\r\n\r\n", 400).errorMessage(),
            "The request path contains a malformed percent escape.");
  EXPECT_EQ(refuse("GET /a%00b HTTP/1.1\r\n\r\n", 400).errorMessage(),
            "The request path contains a NUL byte.");
  EXPECT_EQ(refuse("GET /a?x=%4 HTTP/1.1\r\n\r\n", 400).errorMessage(),
            "The request query contains a malformed percent escape.");
  refuse("GET /a?x=%00 HTTP/1.1\r\n\r\n", 400);
}

TEST(RequestParserTest, TraversalIsRefusedEvenWhenEncoded) {
  for (const char* target :
       {"/a/../b", "/..", "/a/..", "/a/%2e%2e/b", "/a/%2E%2E", "/a%2F..%2Fetc", "/a/..?x=1"}) {
    EXPECT_EQ(refuse(fmt::format("GET {} HTTP/1.1\r\n\r\n", target), 400).errorMessage(),
              "The request path must not contain '..' segments.")
        << target;
  }
  // Dots that are not a whole segment are fine.
  EXPECT_EQ(parseOne("GET /a/..b/c.. HTTP/1.1\r\n\r\n").path, "/a/..b/c..");
}

TEST(RequestParserTest, ErrorIsSticky) {
  RequestParser parser;
  ASSERT_EQ(parser.feed("BAD\r\n\r\n"), State::kError);
  EXPECT_EQ(parser.feed("GET / HTTP/1.1\r\n\r\n"), State::kError);
  EXPECT_EQ(parser.errorStatus(), 400);
}

// ---- responses ------------------------------------------------------------------

TEST(ServerResponseTest, FactoriesSetTypeAndEscapeJson) {
  auto json = ServerResponse::json(201, R"({"a":1})");
  EXPECT_EQ(json.status, 201);
  ASSERT_EQ(json.headers.size(), 1U);
  EXPECT_EQ(json.headers[0],
            std::make_pair(std::string("Content-Type"), std::string("application/json")));

  auto text = ServerResponse::text(200, "hi");
  EXPECT_EQ(text.headers[0].second, "text/plain; charset=utf-8");

  auto error = ServerResponse::error(409, "conflict", "Say \"no\"\n to \\ this.");
  EXPECT_EQ(error.status, 409);
  EXPECT_EQ(error.body, R"({"error":{"code":"conflict","message":"Say \"no\"\n to \\ this."}})");
  // Bytes that are not UTF-8 do not make the error body throw.
  auto binary = ServerResponse::error(404, "not_found", "No resource at /\xff.");
  EXPECT_TRUE(nlohmann::json::accept(binary.body));
}

// ---- router ---------------------------------------------------------------------

Handler named(const std::string& name) {
  return [name](ServerRequest&) { return ServerResponse::text(200, name); };
}

ServerRequest requestFor(std::string method, std::string path) {
  ServerRequest request;
  request.method = std::move(method);
  request.path = std::move(path);
  return request;
}

TEST(RouterTest, MatchesLiteralsAndFillsParameters) {
  Router router;
  router.add("GET", "/api/v1/desktops", named("list"));
  router.add("GET", "/api/v1/desktops/{id}/console", named("console"));
  router.add("POST", "/api/v1/users/{user}/desktops/{id}", named("assign"));

  auto list = requestFor("GET", "/api/v1/desktops");
  EXPECT_EQ(router.dispatch(list).body, "list");

  auto console = requestFor("GET", "/api/v1/desktops/d42/console");
  EXPECT_EQ(router.dispatch(console).body, "console");
  EXPECT_EQ(console.pathParams.at("id"), "d42");

  auto assign = requestFor("POST", "/api/v1/users/alice/desktops/d1");
  EXPECT_EQ(router.dispatch(assign).body, "assign");
  EXPECT_EQ(assign.pathParams.at("user"), "alice");
  EXPECT_EQ(assign.pathParams.at("id"), "d1");
}

TEST(RouterTest, LiteralBeatsParameterInAnyOrder) {
  for (bool literalFirst : {true, false}) {
    Router router;
    if (literalFirst) {
      router.add("GET", "/api/v1/desktops/mine", named("mine"));
    }
    router.add("GET", "/api/v1/desktops/{id}", named("one"));
    if (!literalFirst) {
      router.add("GET", "/api/v1/desktops/mine", named("mine"));
    }
    auto mine = requestFor("GET", "/api/v1/desktops/mine");
    EXPECT_EQ(router.dispatch(mine).body, "mine");
    EXPECT_TRUE(mine.pathParams.empty());
    auto other = requestFor("GET", "/api/v1/desktops/d7");
    EXPECT_EQ(router.dispatch(other).body, "one");
    EXPECT_EQ(other.pathParams.at("id"), "d7");
  }
}

TEST(RouterTest, UnknownPathIs404Json) {
  Router router;
  router.add("GET", "/a/{id}", named("a"));
  for (const char* path : {"/x", "/a", "/a/", "/a/1/2", "/"}) {
    auto request = requestFor("GET", path);
    auto response = router.dispatch(request);
    EXPECT_EQ(response.status, 404) << path;
    EXPECT_EQ(errorCodeOf(response), "not_found");
    EXPECT_EQ(errorMessageOf(response), fmt::format("No resource at {}.", path));
  }
  auto x = requestFor("GET", "/x");
  EXPECT_EQ(router.dispatch(x).body,
            R"({"error":{"code":"not_found","message":"No resource at /x."}})");
}

TEST(RouterTest, KnownPathOtherMethodIs405WithAllow) {
  Router router;
  router.add("GET", "/api/v1/desktops/{id}", named("get"));
  router.add("DELETE", "/api/v1/desktops/{id}", named("delete"));
  router.add("POST", "/api/v1/desktops/{id}/start", named("start"));
  auto request = requestFor("PUT", "/api/v1/desktops/d1");
  auto response = router.dispatch(request);
  EXPECT_EQ(response.status, 405);
  EXPECT_EQ(errorCodeOf(response), "method_not_allowed");
  EXPECT_EQ(errorMessageOf(response), "The method PUT is not allowed on /api/v1/desktops/d1.");
  std::string allow;
  for (const auto& [name, value] : response.headers) {
    if (name == "Allow") {
      allow = value;
    }
  }
  EXPECT_EQ(allow, "DELETE, GET, HEAD");
}

TEST(RouterTest, HeadFallsBackToGet) {
  Router router;
  router.add("GET", "/thing", named("get"));
  auto head = requestFor("HEAD", "/thing");
  EXPECT_EQ(router.dispatch(head).body, "get");

  router.add("HEAD", "/thing", named("head"));
  auto explicitHead = requestFor("HEAD", "/thing");
  EXPECT_EQ(router.dispatch(explicitHead).body, "head");
}

TEST(RouterTest, MethodFromALessSpecificRouteStillServes) {
  // DELETE exists only on the parameter route: it serves "/desktops/mine" too.
  Router router;
  router.add("GET", "/desktops/mine", named("mine"));
  router.add("DELETE", "/desktops/{id}", named("delete"));
  auto request = requestFor("DELETE", "/desktops/mine");
  EXPECT_EQ(router.dispatch(request).body, "delete");
  EXPECT_EQ(request.pathParams.at("id"), "mine");
}

TEST(RouterTest, RootAndEmptySegments) {
  Router router;
  router.add("GET", "/", named("root"));
  router.add("GET", "/a/{id}", named("a"));
  auto root = requestFor("GET", "/");
  EXPECT_EQ(router.dispatch(root).body, "root");
  // A parameter never matches an empty segment.
  auto empty = requestFor("GET", "/a/");
  EXPECT_EQ(router.dispatch(empty).status, 404);
}

// ---- byte ranges ----------------------------------------------------------------

TEST(ParseRangeTest, OneRangeInEachForm) {
  ByteRange r;
  ASSERT_EQ(parseRange("bytes=0-99", 1000, r), RangeResult::kPartial);
  EXPECT_EQ(r.first, 0U);
  EXPECT_EQ(r.length, 100U);
  ASSERT_EQ(parseRange("bytes=900-", 1000, r), RangeResult::kPartial);
  EXPECT_EQ(r.first, 900U);
  EXPECT_EQ(r.length, 100U);
  ASSERT_EQ(parseRange("bytes=-10", 1000, r), RangeResult::kPartial);
  EXPECT_EQ(r.first, 990U);
  EXPECT_EQ(r.length, 10U);
  // A last byte past the end is cut to the end; a suffix longer than the
  // file is the whole file.
  ASSERT_EQ(parseRange("bytes=500-5000", 1000, r), RangeResult::kPartial);
  EXPECT_EQ(r.length, 500U);
  ASSERT_EQ(parseRange("bytes=-5000", 1000, r), RangeResult::kPartial);
  EXPECT_EQ(r.first, 0U);
  EXPECT_EQ(r.length, 1000U);
  ASSERT_EQ(parseRange(" bytes= 7-7 ", 1000, r), RangeResult::kPartial);
  EXPECT_EQ(r.first, 7U);
  EXPECT_EQ(r.length, 1U);
}

TEST(ParseRangeTest, PastTheEndIsUnsatisfiableAndNonsenseIsIgnored) {
  ByteRange r;
  EXPECT_EQ(parseRange("bytes=1000-", 1000, r), RangeResult::kUnsatisfiable);
  EXPECT_EQ(parseRange("bytes=-0", 1000, r), RangeResult::kUnsatisfiable);
  EXPECT_EQ(parseRange("bytes=0-", 0, r), RangeResult::kUnsatisfiable);
  // Not a range we serve: the whole file, never an error.
  for (const char* header : {"items=0-1", "bytes=5-1", "bytes=a-b", "bytes=", "bytes=-",
                             "bytes=0-1,5-6", "bytes=99999999999999999999-"}) {
    EXPECT_EQ(parseRange(header, 1000, r), RangeResult::kWhole) << header;
  }
}

}  // namespace
}  // namespace aula::http
