// aulactl: resources and verbs over the broker's API, with human tables or
// --json for scripts. Credentials (broker URL, CA, token) live in
// ~/.config/aula/aulactl.json (mode 0600) after `aulactl login`, or come from
// AULA_URL, AULA_CA_FILE / AULA_CA_FINGERPRINT and AULA_TOKEN.
#include "aula/broker/aulactl.hpp"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "aula/common/file.hpp"
#include "aula/common/http_client.hpp"
#include "aula/common/json.hpp"

#include "cli/aulactl_internal.hpp"

namespace aula::ctl {
namespace {

namespace fs = std::filesystem;
using json::Json;

enum class FieldType { kString, kInt, kBool, kIntList, kStringList, kNumber };

enum class Use { kBoth, kCreate, kUpdate };

struct Field {
  std::string name;  // JSON field; the option is --name with '_' as '-'
  FieldType type;
  bool requiredOnCreate = false;
  std::string help;
  Use use = Use::kBoth;  // which verbs take it (the API refuses it on the others)
};

struct Resource {
  std::string name;  // command name
  std::string path;  // API collection path
  std::string help;
  std::vector<std::string> columns;  // for list tables
  std::vector<Field> fields;         // for create and update
  bool canCreate = true;
  bool canUpdate = true;
  bool canShow = true;
  std::string keyName = "id";  // what identifies one item in the path
};

const std::vector<Resource>& resources() {
  static const std::vector<Resource> kResources = {
      {"categories",
       "/api/v1/categories",
       "schools or departments",
       {"id", "name", "description"},
       {{"name", FieldType::kString, true, "category name"},
        {"description", FieldType::kString, false, ""}},
       true,
       true,
       false},
      {"groups",
       "/api/v1/groups",
       "classes and other groups of users",
       {"id", "category_id", "name", "members", "ldap_dn"},
       {{"name", FieldType::kString, true, "group name"},
        {"category_id", FieldType::kInt, false, "category (a teacher's own by default)",
         Use::kCreate},
        {"description", FieldType::kString, false, ""},
        {"ldap_dn", FieldType::kString, false, "directory group it mirrors"}}},
      {"users",
       "/api/v1/users",
       "people who log in",
       {"id", "username", "display_name", "role", "category_id", "auth_source", "disabled"},
       {{"username", FieldType::kString, true, "log-in name", Use::kCreate},
        {"display_name", FieldType::kString, false, ""},
        {"email", FieldType::kString, false, ""},
        {"role", FieldType::kString, false, "admin, manager, advanced or user"},
        {"category_id", FieldType::kInt, false, ""},
        {"password", FieldType::kString, false, "initial password (local users)"},
        {"group_ids", FieldType::kIntList, false, "groups to join", Use::kCreate},
        {"disabled", FieldType::kBool, false, "true to lock the account", Use::kUpdate}}},
      {"templates",
       "/api/v1/templates",
       "base disks desktops are made from",
       {"id", "name", "vcpus", "memory_mb", "disk_gb", "video", "usb", "version", "enabled",
        "access"},
       {{"name", FieldType::kString, true, ""},
        {"description", FieldType::kString, false, ""},
        {"storage", FieldType::kString, false,
         "named storage of the base disk (default: templates)"},
        {"base_disk", FieldType::kString, true, "path of the base qcow2 inside that storage"},
        {"disk_gb", FieldType::kInt, true, ""},
        {"vcpus", FieldType::kInt, true, ""},
        {"memory_mb", FieldType::kInt, true, ""},
        {"video", FieldType::kString, false, "qxl or virtio"},
        {"usb", FieldType::kString, false,
         "USB devices lab PCs hand to its desktops: none, storage (default), all"},
        {"access", FieldType::kStringList, false, "everyone, user:<id>, group:<id>, category:<id>"},
        {"pools", FieldType::kIntList, false, "pools it may run in"},
        {"category_id", FieldType::kInt, false, "", Use::kCreate},
        {"enabled", FieldType::kBool, false, ""}}},
      {"desktops",
       "/api/v1/desktops",
       "desktops (yours; --scope all for those you manage)",
       {"id", "name", "owner", "template", "state", "host", "persistent"},
       {{"name", FieldType::kString, true, ""},
        {"template_id", FieldType::kInt, true, ""},
        {"persistent", FieldType::kBool, false, "keep changes across stops (default true)"},
        {"owner_id", FieldType::kInt, false, "for another user (teachers, admins)"}},
       true,
       false},
      {"deployments",
       "/api/v1/deployments",
       "one desktop for every member of a group",
       {"id", "name", "template", "group", "desktops", "running", "connected"},
       {{"name", FieldType::kString, true, ""},
        {"template_id", FieldType::kInt, true, ""},
        {"group_id", FieldType::kInt, true, ""},
        {"persistent", FieldType::kBool, false, ""}},
       true,
       false},
      {"pools",
       "/api/v1/pools",
       "groups of hosts",
       {"id", "name", "hosts", "description"},
       {{"name", FieldType::kString, true, ""}, {"description", FieldType::kString, false, ""}},
       true,
       false,
       false},
      {"hosts",
       "/api/v1/hosts",
       "hypervisors and workstations",
       {"id", "name", "kind", "pool", "state", "cpus", "memory_mb", "cpu_idle", "free_memory_mb",
        "last_heartbeat"},
       {{"name", FieldType::kString, true, "", Use::kCreate},
        {"kind", FieldType::kString, false, "hypervisor or workstation", Use::kCreate},
        {"pool_id", FieldType::kInt, true, ""},
        {"address", FieldType::kString, false, "agent address"},
        {"cpus", FieldType::kInt, false, "", Use::kCreate},
        {"memory_mb", FieldType::kInt, false, "", Use::kCreate},
        {"vcpu_ratio_limit", FieldType::kNumber, false, "vCPUs per physical CPU allowed"},
        {"state", FieldType::kString, false, "maintenance, disabled or online", Use::kUpdate}}},
      {"enrolment-tokens",
       "/api/v1/enrolment-tokens",
       "one-time tokens that let a host join",
       {"id", "host_name", "kind", "pool_id", "expires_at", "used_at"},
       {{"host_name", FieldType::kString, true, ""},
        {"kind", FieldType::kString, false, "hypervisor or workstation"},
        {"pool_id", FieldType::kInt, true, ""},
        {"valid_minutes", FieldType::kInt, false, "default 60"}},
       true,
       false,
       false},
      {"boot-hosts",
       "/api/v1/boot-hosts",
       "what each MAC address boots",
       {"mac", "kind", "channel", "hostname", "host_id", "last_seen"},
       {{"kind", FieldType::kString, true, "thin_client, workstation or unknown"},
        {"channel", FieldType::kString, false, "image channel (default stable)"},
        {"hostname", FieldType::kString, false, ""},
        {"host_id", FieldType::kInt, false, "workstation host"}},
       false,
       true,
       false,
       "mac"},
      {"api-tokens",
       "/api/v1/api-tokens",
       "your tokens for scripts",
       {"id", "name", "created_at", "expires_at"},
       {{"name", FieldType::kString, true, ""},
        {"valid_days", FieldType::kInt, false, "default 365"}},
       true,
       false,
       false},
  };
  return kResources;
}

}  // namespace

// Shared with the other command files (aulactl_internal.hpp).
namespace detail {

fs::path credentialsPath() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  const char* home = std::getenv("HOME");
  fs::path base =
      xdg != nullptr ? fs::path(xdg) : fs::path(home != nullptr ? home : "/root") / ".config";
  return base / "aula" / "aulactl.json";
}

std::function<void()> withSavedSession(int& exitCode, std::function<int(const Session&)> f) {
  return [f = std::move(f), &exitCode] {
    auto s = loadSession();
    if (!s) {
      std::cerr << "aulactl: " << s.error().message() << "\n";
      exitCode = 1;
      return;
    }
    exitCode = f(*s);
  };
}

Result<Session> loadSession() {
  Session s;
  if (auto text = file::readFile(credentialsPath())) {
    auto j = json::parse(*text);
    if (j && j->is_object()) {
      s.url = j->value("url", "");
      s.token = j->value("token", "");
      if (j->contains("ca_pem"))
        s.caPem = (*j)["ca_pem"].get<std::string>();
      if (j->contains("ca_fingerprint"))
        s.caFingerprint = (*j)["ca_fingerprint"].get<std::string>();
    }
  }
  if (const char* v = std::getenv("AULA_URL"))
    s.url = v;
  if (const char* v = std::getenv("AULA_TOKEN"))
    s.token = v;
  if (const char* v = std::getenv("AULA_CA_FILE")) {
    auto pem = file::readFile(v);
    if (!pem)
      return makeError(Errc::kConfig, "Cannot read the CA file '{}' named by AULA_CA_FILE.", v);
    s.caPem = *pem;
  }
  if (const char* v = std::getenv("AULA_CA_FINGERPRINT"))
    s.caFingerprint = v;
  if (s.url.empty() || s.token.empty()) {
    return Error(
        Errc::kUnauthenticated,
        "Not logged in: run 'aulactl login --url https://BROKER:8443 --ca-file CA.crt --user NAME' "
        "(or set AULA_URL, AULA_TOKEN and AULA_CA_FILE).");
  }
  return s;
}

http::Client clientFor(const Session& s) {
  http::ClientOptions o;
  o.tls.caPem = s.caPem;
  o.tls.caFingerprint = s.caFingerprint;
  o.userAgent = "aulactl/0.1";
  o.totalTimeout = std::chrono::seconds(120);
  return http::Client(o);
}

// Sends a request; prints the API's error sentence and returns nullopt on failure.
std::optional<http::Response> call(const Session& s, const std::string& method,
                                   const std::string& path, const std::optional<Json>& body,
                                   const std::string& accept,
                                   std::optional<std::chrono::milliseconds> timeout) {
  auto client = clientFor(s);
  http::Request r;
  r.method = method;
  r.url = s.url + path;
  r.timeout = timeout;
  r.headers.emplace_back("Authorization", "Bearer " + s.token);
  r.headers.emplace_back("Accept", accept);
  if (body) {
    r.body = body->dump();
    r.headers.emplace_back("Content-Type", "application/json");
  }
  auto response = client.send(r);
  if (!response) {
    std::cerr << "aulactl: " << response.error().message() << "\n";
    return std::nullopt;
  }
  if (response->status >= 400) {
    auto j = json::parse(response->body);
    std::string message =
        j && j->contains("error") ? (*j)["error"].value("message", response->body) : response->body;
    std::cerr << "aulactl: " << message << " (HTTP " << response->status << ")\n";
    if (response->status == 401)
      std::cerr << "aulactl: log in again with 'aulactl login'.\n";
    return std::nullopt;
  }
  return std::move(response).value();
}

static std::string cell(const Json& v) {
  if (v.is_null())
    return "-";
  if (v.is_string())
    return v.get<std::string>();
  if (v.is_boolean())
    return v.get<bool>() ? "yes" : "no";
  if (v.is_array()) {
    std::string out;
    for (const auto& e : v)
      out += (out.empty() ? "" : ",") + cell(e);
    return out.empty() ? "-" : out;
  }
  if (v.is_number_float())
    return fmt::format("{:.2f}", v.get<double>());
  return v.dump();
}

static bool isTimeColumn(const std::string& name) {
  return name == "at" || name.ends_with("_at") || name == "last_heartbeat" ||
         name.ends_with("_seen");
}

static std::string timeCell(const Json& v) {
  if (!v.is_number_integer())
    return cell(v);
  std::time_t t = v.get<std::int64_t>();
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  (void)std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

void printTable(const Json& rows, const std::vector<std::string>& columns) {
  std::vector<std::size_t> width;
  width.reserve(columns.size());
  for (const auto& c : columns)
    width.push_back(c.size());
  std::vector<std::vector<std::string>> cells;
  for (const auto& row : rows) {
    std::vector<std::string> line;
    for (std::size_t i = 0; i < columns.size(); ++i) {
      const Json& v = row.value(columns[i], Json());
      line.push_back(isTimeColumn(columns[i]) ? timeCell(v) : cell(v));
      width[i] = std::max(width[i], line.back().size());
    }
    cells.push_back(std::move(line));
  }
  auto print = [&](const std::vector<std::string>& line) {
    std::string out;
    for (std::size_t i = 0; i < line.size(); ++i) {
      out += line[i];
      if (i + 1 < line.size())
        out += std::string(width[i] - line[i].size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  std::vector<std::string> header;
  for (const auto& c : columns) {
    std::string h = c;
    for (auto& ch : h)
      ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    header.push_back(h);
  }
  print(header);
  for (const auto& line : cells)
    print(line);
}

static void printObject(const Json& object) {
  std::size_t w = 0;
  for (const auto& [k, v] : object.items())
    w = std::max(w, k.size());
  for (const auto& [k, v] : object.items()) {
    std::cout << k << std::string(w - k.size() + 2, ' ')
              << (v.is_object()     ? v.dump()
                  : isTimeColumn(k) ? timeCell(v)
                                    : cell(v))
              << "\n";
  }
}

// `aulactl directory check` for people: the entry, each group with its
// path through nested groups, and what follows in Aula.
static std::string printDirectoryCheck(const Json& j) {
  auto text = [&j](const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string("-");
  };
  std::string out = fmt::format("Entry:       {}\n", text("dn"));
  out += fmt::format("Name:        {}\nMail:        {}\nuid:         {}\n", text("display_name"),
                     text("email"), text("uid"));
  out += fmt::format("Nested:      {}\n", text("nesting"));
  out += fmt::format("Groups ({}):\n", j["groups"].size());
  for (const auto& g : j["groups"]) {
    std::string path;
    for (const auto& step : g["path"])
      path += (path.empty() ? "" : "  ->  ") + step.get<std::string>();
    std::string what;
    if (g.contains("role"))
      what += " [role " + g["role"].get<std::string>() + "]";
    if (g.contains("aula_group"))
      what += " [Aula group " + g["aula_group"].get<std::string>() + "]";
    out += fmt::format("  {}{}\n", path, what);
  }
  out +=
      fmt::format("Role:        {}{}\n", text("role"),
                  j["role_from"].is_string() ? " (from " + j["role_from"].get<std::string>() + ")"
                                             : std::string(" (ldap.default_role)"));
  out += fmt::format("Category:    {}\n", text("category"));
  std::string groups;
  for (const auto& g : j["aula_groups"])
    groups += (groups.empty() ? "" : ", ") + g.get<std::string>();
  out += fmt::format("Aula groups: {}\n", groups.empty() ? std::string("none") : groups);
  if (j["aula_user"].is_object()) {
    out += fmt::format("In Aula:     user {} ({}{})\n", j["aula_user"]["id"].get<std::int64_t>(),
                       j["aula_user"]["auth_source"].get<std::string>(),
                       j["aula_user"]["disabled"].get<bool>() ? ", disabled" : "");
  } else {
    out += "In Aula:     not yet; the first login creates the user\n";
  }
  return out;
}

void output(const Json& j, bool asJson, const std::vector<std::string>& columns) {
  if (asJson) {
    std::cout << j.dump(2) << "\n";
  } else if (j.is_array()) {
    printTable(j, columns);
  } else if (j.is_object()) {
    printObject(j);
  }
}

}  // namespace detail

namespace {

using namespace detail;

// Values given on the command line for a resource's fields, as JSON.
struct FieldValues {
  std::map<std::string, std::string> text;
  std::map<std::string, std::vector<std::string>> lists;
};

Result<Json> bodyFrom(const std::vector<Field>& fields, const FieldValues& values) {
  Json body = Json::object();
  for (const auto& f : fields) {
    std::string option = f.name;
    std::replace(option.begin(), option.end(), '_', '-');
    if (f.type == FieldType::kIntList || f.type == FieldType::kStringList) {
      auto it = values.lists.find(f.name);
      if (it == values.lists.end() || it->second.empty())
        continue;
      Json list = Json::array();
      for (const auto& v : it->second) {
        if (f.type == FieldType::kIntList) {
          char* end = nullptr;
          long long n = std::strtoll(v.c_str(), &end, 10);
          if (end == v.c_str() || *end != '\0') {
            return makeError(Errc::kInvalidArgument, "--{} takes numbers, not '{}'.", option, v);
          }
          list.push_back(n);
        } else {
          list.push_back(v);
        }
      }
      body[f.name] = list;
      continue;
    }
    auto it = values.text.find(f.name);
    if (it == values.text.end())
      continue;
    const std::string& v = it->second;
    if (f.type == FieldType::kString) {
      body[f.name] = v;
    } else if (f.type == FieldType::kInt) {
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0')
        return makeError(Errc::kInvalidArgument, "--{} takes a number, not '{}'.", option, v);
      body[f.name] = n;
    } else if (f.type == FieldType::kNumber) {
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0')
        return makeError(Errc::kInvalidArgument, "--{} takes a number, not '{}'.", option, v);
      body[f.name] = d;
    } else if (f.type == FieldType::kBool) {
      if (v != "true" && v != "false")
        return makeError(Errc::kInvalidArgument, "--{} takes true or false, not '{}'.", option, v);
      body[f.name] = v == "true";
    }
  }
  return body;
}

std::string readPassword(const std::string& prompt) {
  std::cerr << prompt;
  termios old{};
  bool tty = ::tcgetattr(STDIN_FILENO, &old) == 0;
  if (tty) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string pw;
  std::getline(std::cin, pw);
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
  }
  return pw;
}

std::string pathSegment(const std::string& s) {
  return http::urlEncode(s);
}

// ---- consoles: the .vv file and remote-viewer ----

constexpr const char* kVirtViewerType = "application/x-virt-viewer";

// The program's full path as exec would find it in PATH, or nullopt.
std::optional<fs::path> findProgram(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    auto colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    if (colon == std::string_view::npos)
      return std::nullopt;
    dirs.remove_prefix(colon + 1);
  }
}

// A word a POSIX shell reads back as itself.
std::string shellQuote(const std::string& word) {
  bool plain = !word.empty();
  for (char c : word) {
    if (!std::isalnum(static_cast<unsigned char>(c)) &&
        std::string_view("_-./:=@%+,").find(c) == std::string_view::npos) {
      plain = false;
    }
  }
  if (plain)
    return word;
  std::string out = "'";
  for (char c : word)
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Writes a file only its owner may read (it holds a live ticket): made
// private before the ticket goes in, and renamed over a file of that name,
// so a symbolic link there is replaced, never followed.
Status writePrivateFile(const std::string& path, const std::string& text) {
  return file::writeFileAtomic(path, text, {.mode = 0600});
}

// A new private file for the connection, in $XDG_RUNTIME_DIR (a directory
// only this user may enter) or else the temporary directory; mkstemps makes
// it 0600 and never reuses a name.
Result<std::string> writePrivateTempFile(const std::string& desktopId, const std::string& text) {
  std::string dir;
  std::error_code ec;
  for (const char* var : {"XDG_RUNTIME_DIR", "TMPDIR"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0' && fs::is_directory(v, ec)) {
      dir = v;
      break;
    }
  }
  if (dir.empty())
    dir = "/tmp";
  std::string id;
  for (char c : desktopId) {
    if (std::isdigit(static_cast<unsigned char>(c)))
      id.push_back(c);
  }
  std::string name = (fs::path(dir) / fmt::format("aula-desktop-{}-XXXXXX.vv", id)).string();
  int fd = ::mkstemps(name.data(), 3);
  if (fd < 0) {
    return Error(Errc::kIo,
                 fmt::format("Cannot make a private file in '{}': {}; name one with --vv-out.", dir,
                             std::strerror(errno)),
                 errno);
  }
  file::UniqueFd owned(fd);
  auto written = file::writeAll(owned.get(), text, name);
  owned.reset();
  if (!written) {
    ::unlink(name.c_str());
    return written.error();
  }
  return name;
}

// Asks for the console of a desktop as a .vv file; prints why not and
// returns nullopt on failure.
std::optional<std::string> fetchConsoleFile(const Session& s, const std::string& id) {
  auto r = call(s, "POST", "/api/v1/desktops/" + pathSegment(id) + "/console", std::nullopt,
                kVirtViewerType);
  if (!r)
    return std::nullopt;
  if (r->header("content-type").rfind(kVirtViewerType, 0) != 0) {
    std::cerr << "aulactl: the broker answered with '" << r->header("content-type")
              << "' instead of a virt-viewer file; it may be older than this aulactl.\n";
    return std::nullopt;
  }
  return std::move(r->body);
}

constexpr const char* kNoRemoteViewer =
    "remote-viewer is not installed (or not in PATH): install it with 'apt-get install "
    "virt-viewer', or save the connection with --vv-out FILE and open it where it is installed.";

// `desktops open`: the console into a private .vv file, then remote-viewer on
// it (which deletes the file: delete-this-file=1). Returns the exit code, if
// it does not become remote-viewer.
int openDesktop(const Session& s, const std::string& id, const std::string& vvOut,
                bool printCommand) {
  const bool launch = vvOut.empty() && !printCommand;
  std::optional<fs::path> viewer;
  if (launch) {
    // Before the broker starts the desktop and spends a ticket on it.
    viewer = findProgram("remote-viewer");
    if (!viewer) {
      std::cerr << "aulactl: " << kNoRemoteViewer << "\n";
      return 1;
    }
  }
  auto text = fetchConsoleFile(s, id);
  if (!text)
    return 1;
  std::string path = vvOut;
  if (vvOut.empty()) {
    auto made = writePrivateTempFile(id, *text);
    if (!made) {
      std::cerr << "aulactl: " << made.error().message() << "\n";
      return 1;
    }
    path = *made;
  } else if (auto written = writePrivateFile(vvOut, *text); !written) {
    std::cerr << "aulactl: " << written.error().message() << "\n";
    return 1;
  }
  if (!launch) {
    std::cout << (printCommand ? "remote-viewer " + shellQuote(path) : path) << "\n";
    return 0;
  }
  std::cout.flush();
  std::cerr.flush();
  std::string program = viewer->string();
  std::vector<char*> argv = {program.data(), path.data(), nullptr};
  ::execv(program.c_str(), argv.data());
  int error = errno;
  ::unlink(path.c_str());
  std::cerr << "aulactl: cannot run " << program << ": " << std::strerror(error) << ".\n";
  if (error == ENOENT)
    std::cerr << "aulactl: " << kNoRemoteViewer << "\n";
  return 1;
}

// A console descriptor for people: the ticket and how long it still works.
void printConsole(const Json& d) {
  std::vector<std::pair<std::string, std::string>> rows;
  const Json& desktop = d.value("desktop", Json::object());
  rows.emplace_back("Desktop", fmt::format("{} '{}' ({}{})", cell(desktop.value("id", Json())),
                                           desktop.value("name", ""), desktop.value("state", "?"),
                                           desktop.value("host", Json()).is_string()
                                               ? " on " + desktop["host"].get<std::string>()
                                               : ""));
  rows.emplace_back("Host", cell(d.value("host", Json())));
  rows.emplace_back("TLS port", cell(d.value("tls_port", Json())));
  if (!d.value("port", Json()).is_null())
    rows.emplace_back("Plain port", cell(d["port"]) + " (unencrypted; tests only)");
  rows.emplace_back("Ticket", cell(d.value("ticket", Json())));
  const Json& expires = d.value("expires_at", Json());
  if (expires.is_number_integer()) {
    auto left = expires.get<std::int64_t>() - static_cast<std::int64_t>(std::time(nullptr));
    rows.emplace_back(
        "Expires", fmt::format("{} (in {} s)", timeCell(expires), std::max<std::int64_t>(left, 0)));
  }
  rows.emplace_back("Host subject", cell(d.value("host_subject", Json())));
  rows.emplace_back("CA", d.value("ca", "").empty()
                              ? std::string("-")
                              : std::string("the broker's CA (PEM; shown with --json)"));
  std::size_t w = 0;
  for (const auto& [k, v] : rows)
    w = std::max(w, k.size());
  for (const auto& [k, v] : rows)
    std::cout << k << std::string(w - k.size() + 2, ' ') << v << "\n";
  std::cout << "The ticket works for one connection, until it expires. To open the desktop: "
            << "aulactl desktops open " << cell(desktop.value("id", Json())) << "\n";
}

}  // namespace

int run(const std::vector<std::string>& args) {
  CLI::App app{"aulactl: manage Aula over the broker's API."};
  app.require_subcommand(1);
  bool asJson = false;
  app.add_flag("--json", asJson, "print JSON for scripts instead of tables");
  int exitCode = 0;

  // login / logout / whoami
  auto* login = app.add_subcommand("login", "log in and keep the session token for later commands");
  std::string url, caFile, caFingerprint, user, passwordFile;
  login->add_option("--url", url, "broker URL, like https://broker.school.example:8443")
      ->required();
  login->add_option("--ca-file", caFile, "the broker's CA certificate (PEM)");
  login->add_option("--ca-fingerprint", caFingerprint, "or the SHA-256 fingerprint of that CA");
  login->add_option("--user", user, "user name")->required();
  login->add_option("--password-file", passwordFile,
                    "read the password from this file instead of asking");
  login->callback([&] {
    Session s;
    s.url = url;
    while (!s.url.empty() && s.url.back() == '/')
      s.url.pop_back();
    if (!caFile.empty()) {
      auto pem = file::readFile(caFile);
      if (!pem) {
        std::cerr << "aulactl: cannot read the CA file '" << caFile << "'.\n";
        exitCode = 2;
        return;
      }
      s.caPem = *pem;
    } else if (!caFingerprint.empty()) {
      s.caFingerprint = caFingerprint;
    } else {
      std::cerr << "aulactl: give the broker's CA with --ca-file or --ca-fingerprint.\n";
      exitCode = 2;
      return;
    }
    std::string password;
    if (!passwordFile.empty()) {
      auto pw = file::readFile(passwordFile);
      if (!pw) {
        std::cerr << "aulactl: cannot read the password file '" << passwordFile << "'.\n";
        exitCode = 2;
        return;
      }
      password = pw->substr(0, pw->find('\n'));
    } else {
      password = readPassword("Password for " + user + ": ");
    }
    auto client = clientFor(s);
    auto r = client.postJson(s.url + "/api/v1/session",
                             Json{{"username", user}, {"password", password}}.dump());
    if (!r) {
      std::cerr << "aulactl: " << r.error().message() << "\n";
      exitCode = 1;
      return;
    }
    auto j = json::parse(r->body);
    if (r->status != 201 || !j || !j->contains("token")) {
      std::string message =
          j && j->contains("error") ? (*j)["error"].value("message", "") : r->body;
      std::cerr << "aulactl: " << message << " (HTTP " << r->status << ")\n";
      exitCode = 1;
      return;
    }
    s.token = (*j)["token"].get<std::string>();
    Json saved{{"url", s.url}, {"token", s.token}};
    if (s.caPem)
      saved["ca_pem"] = *s.caPem;
    if (s.caFingerprint)
      saved["ca_fingerprint"] = *s.caFingerprint;
    if (auto pinned = client.pinnedCaPem())
      saved["ca_pem"] = *pinned;
    auto path = credentialsPath();
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    // The token is a credential: never readable by others, not for a moment.
    if (auto written = file::writeFileAtomic(path, saved.dump(2) + "\n", {.mode = 0600});
        !written) {
      std::cerr << "aulactl: logged in, but the session was not saved: "
                << written.error().message() << "\n";
      exitCode = 1;
      return;
    }
    std::cout << "Logged in to " << s.url << " as " << user << " ("
              << (*j)["user"]["role"].get<std::string>() << ").\n";
  });

  app.add_subcommand("logout", "end the session and forget the token")->callback([&] {
    auto s = loadSession();
    if (s)
      call(*s, "DELETE", "/api/v1/session", std::nullopt);
    std::error_code ec;
    fs::remove(credentialsPath(), ec);
    std::cout << "Logged out.\n";
  });
  app.add_subcommand("whoami", "show who you are logged in as")->callback([&] {
    auto s = loadSession();
    if (!s) {
      std::cerr << "aulactl: " << s.error().message() << "\n";
      exitCode = 1;
      return;
    }
    auto r = call(*s, "GET", "/api/v1/me", std::nullopt);
    if (!r) {
      exitCode = 1;
      return;
    }
    output(*json::parse(r->body), asJson, {});
  });

  app.add_subcommand("password", "change your own password (local accounts)")->callback([&] {
    auto s = loadSession();
    if (!s) {
      std::cerr << "aulactl: " << s.error().message() << "\n";
      exitCode = 1;
      return;
    }
    std::string current = readPassword("Current password: ");
    std::string next = readPassword("New password: ");
    if (next != readPassword("New password again: ")) {
      std::cerr << "aulactl: the two new passwords differ; nothing was changed.\n";
      exitCode = 2;
      return;
    }
    if (!call(*s, "POST", "/api/v1/me/password",
              Json{{"current_password", current}, {"new_password", next}})) {
      exitCode = 1;
      return;
    }
    std::cout << "Password changed; your other sessions were logged out.\n";
  });

  // desktops console / open
  std::string consoleVv, openVvOut;
  bool openPrintCommand = false;

  // The resources, generated from the table.
  std::vector<std::unique_ptr<FieldValues>> valueStore;
  std::vector<std::unique_ptr<std::string>> keyStore;
  std::vector<std::unique_ptr<std::map<std::string, std::string>>> queryStore;
  for (const auto& res : resources()) {
    auto* cmd = app.add_subcommand(res.name, res.help);
    cmd->require_subcommand(1);
    auto withSession = [&exitCode](const std::function<void(const Session&)>& f) {
      return [f, &exitCode] {
        auto s = loadSession();
        if (!s) {
          std::cerr << "aulactl: " << s.error().message() << "\n";
          exitCode = 1;
          return;
        }
        f(*s);
      };
    };
    auto finish = [&exitCode, &asJson](const std::optional<http::Response>& r,
                                       const std::vector<std::string>& columns) {
      if (!r) {
        exitCode = 1;
        return;
      }
      if (r->status == 204 || r->body.empty()) {
        std::cout << "Done.\n";
        return;
      }
      auto j = json::parse(r->body);
      if (!j) {
        std::cout << r->body;
        return;
      }
      output(*j, asJson, columns);
    };

    auto* list = cmd->add_subcommand("list", "list " + res.name);
    auto* query =
        queryStore.emplace_back(std::make_unique<std::map<std::string, std::string>>()).get();
    if (res.name == "desktops") {
      list->add_option("--scope", (*query)["scope"], "mine (default) or all you manage");
      list->add_option("--state", (*query)["state"], "only desktops in this state");
      list->add_option("--deployment-id", (*query)["deployment_id"],
                       "only desktops of this deployment");
    } else if (res.name == "users") {
      list->add_option("--role", (*query)["role"], "only this role");
      list->add_option("--group-id", (*query)["group_id"], "only members of this group");
      list->add_option("--search", (*query)["q"], "name contains");
    }
    list->callback(withSession([&res, query, finish](const Session& s) {
      std::string path = res.path;
      std::string sep = "?";
      for (const auto& [k, v] : *query) {
        if (v.empty())
          continue;
        path += sep + k + "=" + http::urlEncode(v);
        sep = "&";
      }
      finish(call(s, "GET", path, std::nullopt), res.columns);
    }));

    auto* key = keyStore.emplace_back(std::make_unique<std::string>()).get();
    if (res.canShow) {
      auto* show = cmd->add_subcommand("show", "show one of " + res.name);
      show->add_option(res.keyName, *key, res.keyName)->required();
      show->callback(withSession([&res, key, finish](const Session& s) {
        finish(call(s, "GET", res.path + "/" + pathSegment(*key), std::nullopt), res.columns);
      }));
    }
    auto addFieldOptions = [&](CLI::App* sub, FieldValues* values, bool creating) {
      for (const auto& f : res.fields) {
        if (f.use == (creating ? Use::kUpdate : Use::kCreate))
          continue;
        std::string option = "--" + f.name;
        std::replace(option.begin(), option.end(), '_', '-');
        if (f.type == FieldType::kIntList || f.type == FieldType::kStringList) {
          sub->add_option(option, values->lists[f.name], f.help)->delimiter(',');
        } else {
          auto* o = sub->add_option(option, values->text[f.name], f.help);
          if (creating && f.requiredOnCreate)
            o->required();
        }
      }
    };
    if (res.canCreate) {
      auto* create = cmd->add_subcommand("create", "create one of " + res.name);
      auto* values = valueStore.emplace_back(std::make_unique<FieldValues>()).get();
      addFieldOptions(create, values, true);
      create->callback(withSession([&res, values, finish, &exitCode](const Session& s) {
        // Options left empty were not given: drop them.
        FieldValues given = *values;
        for (auto it = given.text.begin(); it != given.text.end();)
          it = it->second.empty() ? given.text.erase(it) : std::next(it);
        auto body = bodyFrom(res.fields, given);
        if (!body) {
          std::cerr << "aulactl: " << body.error().message() << "\n";
          exitCode = 2;
          return;
        }
        finish(call(s, "POST", res.path, *body), res.columns);
      }));
    }
    if (res.canUpdate) {
      auto* update = cmd->add_subcommand(
          res.keyName == "mac" ? "set" : "update",
          res.keyName == "mac" ? "set what a MAC address boots" : "change one of " + res.name);
      auto* values = valueStore.emplace_back(std::make_unique<FieldValues>()).get();
      update->add_option(res.keyName, *key, res.keyName)->required();
      addFieldOptions(update, values, false);
      update->callback(withSession([&res, values, key, finish, &exitCode](const Session& s) {
        FieldValues given = *values;
        for (auto it = given.text.begin(); it != given.text.end();)
          it = it->second.empty() ? given.text.erase(it) : std::next(it);
        auto body = bodyFrom(res.fields, given);
        if (!body) {
          std::cerr << "aulactl: " << body.error().message() << "\n";
          exitCode = 2;
          return;
        }
        finish(call(s, res.keyName == "mac" ? "PUT" : "PATCH", res.path + "/" + pathSegment(*key),
                    *body),
               res.columns);
      }));
    }
    auto* del = cmd->add_subcommand("delete", "delete one of " + res.name);
    del->add_option(res.keyName, *key, res.keyName)->required();
    del->callback(withSession([&res, key, finish](const Session& s) {
      finish(call(s, "DELETE", res.path + "/" + pathSegment(*key), std::nullopt), res.columns);
    }));

    // Verbs beyond create/read/update/delete.
    if (res.name == "desktops" || res.name == "deployments") {
      for (std::string verb : {"start", "stop"}) {
        auto* v = cmd->add_subcommand(verb, verb + " one of " + res.name);
        v->add_option("id", *key, "id")->required();
        auto* force =
            queryStore.emplace_back(std::make_unique<std::map<std::string, std::string>>()).get();
        if (verb == "stop")
          v->add_flag("--force{1}", (*force)["force"], "power off instead of shutting down");
        v->callback(withSession([&res, key, verb, force, finish](const Session& s) {
          std::string path = res.path + "/" + pathSegment(*key) + "/" + verb;
          if (!(*force)["force"].empty())
            path += "?force=1";
          finish(call(s, "POST", path, std::nullopt), res.columns);
        }));
      }
    }
    if (res.name == "desktops") {
      auto* console =
          cmd->add_subcommand("console", "get a one-time SPICE connection (host, port, ticket)");
      console->add_option("id", *key, "id")->required();
      console->add_option("--vv", consoleVv, "write a .vv file instead (as 'open --vv-out')");
      console->callback(withSession([key, &consoleVv, &asJson, &exitCode](const Session& s) {
        if (!consoleVv.empty()) {
          exitCode = openDesktop(s, *key, consoleVv, false);
          return;
        }
        auto r =
            call(s, "POST", "/api/v1/desktops/" + pathSegment(*key) + "/console", std::nullopt);
        if (!r) {
          exitCode = 1;
          return;
        }
        auto j = json::parse(r->body);
        if (!j || !j->is_object()) {
          std::cerr << "aulactl: the broker's answer is not a console descriptor.\n";
          exitCode = 1;
          return;
        }
        if (asJson) {
          std::cout << j->dump(2) << "\n";
        } else {
          printConsole(*j);
        }
      }));
      auto* openCmd = cmd->add_subcommand(
          "open", "open a desktop in remote-viewer (starts it if needed; virt-viewer package)");
      openCmd->add_option("id", *key, "id")->required();
      openCmd->add_option(
          "--vv-out", openVvOut,
          "write the connection file here (mode 0600) and print its path instead of "
          "launching remote-viewer");
      openCmd->add_flag("--print-command", openPrintCommand,
                        "write the connection file and print the remote-viewer command instead of "
                        "running it");
      openCmd->callback(
          withSession([key, &openVvOut, &openPrintCommand, &exitCode](const Session& s) {
            exitCode = openDesktop(s, *key, openVvOut, openPrintCommand);
          }));
      auto* makeTemplate = cmd->add_subcommand(
          "make-template", "make a template from a stopped desktop's disk (on its host)");
      auto* templateValues = valueStore.emplace_back(std::make_unique<FieldValues>()).get();
      makeTemplate->add_option("id", *key, "desktop id")->required();
      makeTemplate->add_option("--name", templateValues->text["name"], "the new template's name")
          ->required();
      makeTemplate
          ->add_option("--mode", templateValues->text["mode"],
                       "flatten (default: one standalone image) or rebase (only the desktop's "
                       "changes, on its template's image)")
          ->check(CLI::IsMember({"flatten", "rebase"}));
      makeTemplate->add_option("--description", templateValues->text["description"], "");
      makeTemplate
          ->add_option("--access", templateValues->lists["access"],
                       "user:<id>, group:<id>, category:<id> or everyone")
          ->delimiter(',');
      makeTemplate->callback(withSession([key, templateValues, finish](const Session& s) {
        Json body{{"name", templateValues->text["name"]}};
        for (const char* field : {"mode", "description"}) {
          if (!templateValues->text[field].empty())
            body[field] = templateValues->text[field];
        }
        if (!templateValues->lists["access"].empty())
          body["access"] = templateValues->lists["access"];
        // A flattened image copies the whole disk: wait as long as the broker does.
        finish(call(s, "POST", "/api/v1/desktops/" + pathSegment(*key) + "/template", body,
                    "application/json", std::chrono::hours(6)),
               {"id", "name", "base_disk", "vcpus", "memory_mb", "disk_gb", "pools"});
      }));
    }
    if (res.name == "groups") {
      auto* add = cmd->add_subcommand("add-members", "add users to a group by name");
      auto* names = valueStore.emplace_back(std::make_unique<FieldValues>()).get();
      add->add_option("id", *key, "group id")->required();
      add->add_option("usernames", names->lists["usernames"], "user names")->required();
      add->callback(withSession([key, names, finish](const Session& s) {
        finish(call(s, "POST", "/api/v1/groups/" + pathSegment(*key) + "/members",
                    Json{{"usernames", names->lists["usernames"]}}),
               {});
      }));
      auto* remove = cmd->add_subcommand("remove-member", "take a user out of a group");
      auto* userId = keyStore.emplace_back(std::make_unique<std::string>()).get();
      remove->add_option("id", *key, "group id")->required();
      remove->add_option("user_id", *userId, "user id")->required();
      remove->callback(withSession([key, userId, finish](const Session& s) {
        finish(call(s, "DELETE",
                    "/api/v1/groups/" + pathSegment(*key) + "/members/" + pathSegment(*userId),
                    std::nullopt),
               {});
      }));
    }
    if (res.name == "hosts") {
      auto* devices = cmd->add_subcommand(
          "devices", "the PCI devices the host's agent last reported (for workstations)");
      devices->add_option("id", *key, "host id")->required();
      devices->callback(withSession([key, &exitCode, &asJson](const Session& s) {
        auto r = call(s, "GET", "/api/v1/hosts/" + pathSegment(*key) + "/devices", std::nullopt);
        if (!r) {
          exitCode = 1;
          return;
        }
        auto j = json::parse(r->body);
        if (!j || !j->is_object()) {
          std::cout << r->body;
          return;
        }
        if (asJson) {
          std::cout << j->dump(2) << "\n";
          return;
        }
        const std::string host = j->value("host", "");
        if (!(*j)["reported_at"].is_number_integer()) {
          std::cout << "The agent on " << host
                    << " has not reported its devices yet; it does with every heartbeat.\n";
          return;
        }
        std::cout << "Host " << host << " (" << j->value("kind", "") << "), reported "
                  << timeCell((*j)["reported_at"]) << ", " << j->value("iommu_groups", 0)
                  << " IOMMU groups.\n";
        printTable((*j)["devices"], {"address", "kind", "vendor", "device", "driver", "iommu_group",
                                     "reset_methods", "boot_vga", "held_by"});
      }));
    }
    if (res.name == "users") {
      auto* usage = cmd->add_subcommand("usage", "what a user uses against their quota");
      usage->add_option("id", *key, "user id")->required();
      usage->callback(withSession([key, finish](const Session& s) {
        finish(call(s, "GET", "/api/v1/users/" + pathSegment(*key) + "/usage", std::nullopt), {});
      }));
    }
  }

  // Quotas: subjects, not ids.
  auto* quotas =
      app.add_subcommand("quotas", "limits per role, user, group member, group or category");
  quotas->require_subcommand(1);
  quotas->add_subcommand("list", "list quotas")->callback([&] {
    auto s = loadSession();
    if (!s) {
      std::cerr << "aulactl: " << s.error().message() << "\n";
      exitCode = 1;
      return;
    }
    auto r = call(*s, "GET", "/api/v1/quotas", std::nullopt);
    if (!r) {
      exitCode = 1;
      return;
    }
    output(*json::parse(r->body), asJson,
           {"subject", "desktops", "running", "vcpus", "memory_mb", "disk_gb", "templates"});
  });
  auto* qset =
      quotas->add_subcommand("set", "set the limits of a subject (unset limits mean no limit)");
  std::string subject;
  std::map<std::string, std::string> limits;
  qset->add_option("subject", subject,
                   "role:<role>, user:<id>, group-member:<id>, group:<id> or category:<id>")
      ->required();
  for (std::string l : {"desktops", "running", "vcpus", "memory_mb", "disk_gb", "templates"}) {
    std::string option = "--" + l;
    std::replace(option.begin(), option.end(), '_', '-');
    qset->add_option(option, limits[l], "limit");
  }
  qset->callback([&] {
    auto s = loadSession();
    if (!s) {
      std::cerr << "aulactl: " << s.error().message() << "\n";
      exitCode = 1;
      return;
    }
    Json body = Json::object();
    for (const auto& [k, v] : limits) {
      if (v.empty())
        continue;
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0') {
        std::cerr << "aulactl: --" << k << " takes a number, not '" << v << "'.\n";
        exitCode = 2;
        return;
      }
      body[k] = n;
    }
    auto r = call(*s, "PUT", "/api/v1/quotas/" + http::urlEncode(subject), body);
    if (!r) {
      exitCode = 1;
      return;
    }
    output(*json::parse(r->body), asJson, {});
  });
  auto* qdel = quotas->add_subcommand("delete", "remove the limits of a subject");
  qdel->add_option("subject", subject, "subject")->required();
  qdel->callback([&] {
    auto s = loadSession();
    if (!s) {
      std::cerr << "aulactl: " << s.error().message() << "\n";
      exitCode = 1;
      return;
    }
    if (!call(*s, "DELETE", "/api/v1/quotas/" + http::urlEncode(subject), std::nullopt))
      exitCode = 1;
  });

  // The school directory (LDAP), for admins.
  auto* directory = app.add_subcommand("directory", "the school directory (LDAP): check, sync");
  directory->require_subcommand(1);
  auto* dirCheck = directory->add_subcommand(
      "check", "show what the broker would do for a directory user, without logging them in");
  std::string dirUser;
  dirCheck->add_option("username", dirUser, "the name the user logs in with")->required();
  // The answer of an admin call, printed raw with --json or when it is not
  // JSON; none (and exit code 1) when there was no answer.
  auto directoryCall = [&](const std::string& method, const std::string& path,
                           const std::optional<std::string>& body) -> std::optional<Json> {
    auto s = loadSession();
    if (!s) {
      std::cerr << "aulactl: " << s.error().message() << "\n";
      exitCode = 1;
      return std::nullopt;
    }
    auto r = call(*s, method, path, body);
    if (!r) {
      exitCode = 1;
      return std::nullopt;
    }
    auto j = json::parse(r->body);
    if (!j || asJson) {
      std::cout << r->body << "\n";
      return std::nullopt;
    }
    return *j;
  };
  dirCheck->callback([&] {
    if (auto j = directoryCall(
            "GET", "/api/v1/directory/check?username=" + http::urlEncode(dirUser), std::nullopt))
      std::cout << printDirectoryCheck(*j);
  });
  directory->add_subcommand("sync", "bring every directory user in step with the directory now")
      ->callback([&] {
        auto j = directoryCall("POST", "/api/v1/directory/sync", std::string("{}"));
        if (!j)
          return;
        std::cout << fmt::format("Checked {} directory user(s): {} kept, {} disabled",
                                 (*j)["checked"].get<std::int64_t>(),
                                 (*j)["kept"].get<std::int64_t>(), (*j)["disabled"].size());
        std::string names;
        for (const auto& n : (*j)["disabled"])
          names += (names.empty() ? "" : ", ") + n.get<std::string>();
        std::cout << (names.empty() ? std::string(".") : " (" + names + ").") << "\n";
      });

  addImageCommands(app, asJson, exitCode);
  addWorkstationCommands(app, asJson, exitCode);

  auto* audit = app.add_subcommand("audit", "who did what, when, from where");
  std::string auditActor, auditAction, auditLimit;
  audit->add_option("--actor", auditActor, "only this user");
  audit->add_option("--action", auditAction, "only actions starting with this, like desktop.");
  audit->add_option("--limit", auditLimit, "at most this many entries (default 200)");
  audit->callback([&] {
    auto s = loadSession();
    if (!s) {
      std::cerr << "aulactl: " << s.error().message() << "\n";
      exitCode = 1;
      return;
    }
    std::string path = "/api/v1/audit?limit=" +
                       (auditLimit.empty() ? std::string("200") : http::urlEncode(auditLimit));
    if (!auditActor.empty())
      path += "&actor=" + http::urlEncode(auditActor);
    if (!auditAction.empty())
      path += "&action=" + http::urlEncode(auditAction);
    auto r = call(*s, "GET", path, std::nullopt);
    if (!r) {
      exitCode = 1;
      return;
    }
    output(*json::parse(r->body), asJson, {"id", "at", "actor", "address", "action", "object"});
  });

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exitCode;
}

}  // namespace aula::ctl
