// Files over HTTP: validators, conditional requests and byte ranges.
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>

#include <fcntl.h>
#include <sys/stat.h>

#include "aula/common/http_server.hpp"

namespace aula::http {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool parseNumber(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 19)
    return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string httpDate(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[64] = {};
  (void)std::strftime(buffer, sizeof buffer, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buffer;
}

// Whether an If-None-Match list names `etag` (weak comparison, as RFC 9110
// asks for this header), or is "*".
bool matchesAny(std::string_view list, std::string_view etag) {
  auto strip = [](std::string_view tag) {
    tag = trim(tag);
    if (tag.starts_with("W/"))
      tag.remove_prefix(2);
    return tag;
  };
  if (trim(list) == "*")
    return true;
  while (!list.empty()) {
    const auto comma = list.find(',');
    if (strip(list.substr(0, comma)) == strip(etag))
      return true;
    if (comma == std::string_view::npos)
      break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

RangeResult parseRange(std::string_view header, std::uint64_t size, ByteRange& range) {
  header = trim(header);
  if (!header.starts_with("bytes="))
    return RangeResult::kWhole;  // another unit: ignored, as RFC 9110 says
  header.remove_prefix(6);
  if (header.find(',') != std::string_view::npos)
    return RangeResult::kWhole;  // several ranges: the whole file instead
  header = trim(header);
  const auto dash = header.find('-');
  if (dash == std::string_view::npos)
    return RangeResult::kWhole;  // malformed: ignored
  const std::string_view firstText = trim(header.substr(0, dash));
  const std::string_view lastText = trim(header.substr(dash + 1));
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  if (firstText.empty()) {
    // The last N bytes.
    std::uint64_t suffix = 0;
    if (!parseNumber(lastText, suffix))
      return RangeResult::kWhole;
    if (suffix == 0 || size == 0)
      return RangeResult::kUnsatisfiable;
    range.length = std::min(suffix, size);
    range.first = size - range.length;
    return RangeResult::kPartial;
  }
  if (!parseNumber(firstText, first))
    return RangeResult::kWhole;
  if (lastText.empty()) {
    last = size == 0 ? 0 : size - 1;
  } else if (!parseNumber(lastText, last) || last < first) {
    return RangeResult::kWhole;
  }
  if (first >= size)
    return RangeResult::kUnsatisfiable;
  last = std::min(last, size - 1);
  range.first = first;
  range.length = last - first + 1;
  return RangeResult::kPartial;
}

ServerResponse serveFile(const ServerRequest& request, const std::filesystem::path& path,
                         const FileServeOptions& options) {
  auto notFound = [&] {
    return ServerResponse::error(404, "not_found",
                                 fmt::format("There is no file at {}.", request.path));
  };
  auto fd = std::make_shared<file::UniqueFd>(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (!fd->valid() || ::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode))
    return notFound();
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::string etag = options.etag.empty() ? fmt::format("\"{:x}-{:x}{:x}\"", size,
                                                              st.st_mtim.tv_sec, st.st_mtim.tv_nsec)
                                                : options.etag;

  ServerResponse response;
  response.headers = {{"Content-Type", options.contentType},
                      {"ETag", etag},
                      {"Last-Modified", httpDate(st.st_mtim.tv_sec)},
                      {"Cache-Control", options.cacheControl},
                      {"Accept-Ranges", "bytes"}};
  if (auto inm = request.header("if-none-match"); !inm.empty() && matchesAny(inm, etag)) {
    response.status = 304;
    return response;
  }
  ByteRange range{0, size};
  RangeResult ranged = RangeResult::kWhole;
  if (auto header = request.header("range"); !header.empty()) {
    // If-Range with another tag (or a date, which we do not compare): the
    // client's part is stale, so it gets the whole file.
    auto ifRange = request.header("if-range");
    if (ifRange.empty() || trim(ifRange) == etag)
      ranged = parseRange(header, size, range);
  }
  if (ranged == RangeResult::kUnsatisfiable) {
    response = ServerResponse::error(
        416, "range_not_satisfiable",
        fmt::format("The range '{}' lies outside the file, which has {} bytes.",
                    request.header("range").substr(0, 60), size));
    response.headers.emplace_back("Content-Range", fmt::format("bytes */{}", size));
    return response;
  }
  if (ranged == RangeResult::kPartial) {
    response.status = 206;
    response.headers.emplace_back(
        "Content-Range",
        fmt::format("bytes {}-{}/{}", range.first, range.first + range.length - 1, size));
  }
  response.file = FileBody{.fd = std::move(fd), .offset = range.first, .length = range.length};
  return response;
}

}  // namespace aula::http
