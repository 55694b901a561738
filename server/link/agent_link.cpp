// HostLink over mutual TLS to aula-agent (see agent_link.hpp).
#include "aula/broker/agent_link.hpp"

#include <fmt/format.h>

#include "aula/common/http_client.hpp"
#include "aula/common/json.hpp"
#include "aula/common/log.hpp"

namespace aula::broker {

namespace {

using json::Json;

std::string baseUrl(const HostAddress& host) {
  bool v6 = host.address.find(':') != std::string::npos;
  return fmt::format("https://{}{}{}:{}", v6 ? "[" : "", host.address, v6 ? "]" : "",
                     host.agentPort);
}

Json diskFields(const DesktopSpec& d) {
  return Json{{"persistent", d.persistent}, {"disk_path", d.diskPath}};
}

// One command to one agent; the answer's JSON, or the agent's refusal with
// its own sentence, or why it could not be reached.
Result<Json> call(const AgentLinkOptions& o, const HostAddress& host, const std::string& path,
                  const Json& body, std::chrono::seconds timeout) {
  if (host.address.empty() || host.agentPort <= 0) {
    return makeError(Errc::kUnavailable,
                     "The host '{}' has no agent address yet; enrol its agent with "
                     "'aula-agent enroll --address HOST:PORT'.",
                     host.name);
  }
  http::Client client(http::ClientOptions{
      .connectTimeout = std::chrono::seconds(5),
      .totalTimeout = timeout,
      .tls = {.caPem = o.caPem, .clientCertPem = o.clientCertPem, .clientKeyPem = o.clientKeyPem}});
  http::Request request{.method = "POST",
                        .url = baseUrl(host) + path,
                        .headers = {{"Content-Type", "application/json"}},
                        .body = body.dump()};
  auto sent = client.send(request);
  if (!sent) {
    return Error(Errc::kUnavailable, fmt::format("The agent on host '{}' at {} does not answer: {}",
                                                 host.name, baseUrl(host), sent.error().message()));
  }
  if (sent->status != 200) {
    auto refused = http::errorFromResponse(*sent, fmt::format("The agent on host '{}'", host.name));
    return refused;
  }
  auto answer = json::parse(sent->body);
  if (!answer || !answer->is_object()) {
    return makeError(Errc::kInternal, "The agent on host '{}' sent an answer that is not JSON.",
                     host.name);
  }
  return *answer;
}

}  // namespace

Status AgentLink::startDesktop(const HostAddress& host, const DesktopSpec& d) {
  Json body{
      {"desktop_id", d.id},      {"owner", d.owner},        {"vcpus", d.vcpus},
      {"memory_mb", d.memoryMb}, {"video", d.video},        {"base_storage", d.templateStorage},
      {"base_disk", d.baseDisk}, {"disk_path", d.diskPath}, {"persistent", d.persistent}};
  auto answer = AULA_TRY(call(options_, host, fmt::format("/v1/domains/{}/start", d.name), body,
                              options_.startTimeout));
  if (!answer.value("running", false)) {
    return makeError(Errc::kUnavailable, "The desktop '{}' is {} on host '{}', not running.",
                     d.name, answer.value("state", "unknown"), host.name);
  }
  return {};
}

Status AgentLink::stopDesktop(const HostAddress& host, const DesktopSpec& d, bool force) {
  Json body = diskFields(d);
  std::chrono::seconds timeout(60);
  if (!force) {
    body["grace_seconds"] = options_.shutdownGrace.count();
    timeout += options_.shutdownGrace;
  }
  auto answer = AULA_TRY(call(
      options_, host, fmt::format("/v1/domains/{}/{}", d.name, force ? "poweroff" : "shutdown"),
      body, timeout));
  if (answer.value("forced", false)) {
    log::info("Desktop {} did not shut down within {} s and was powered off.", d.id,
              options_.shutdownGrace.count());
  }
  return {};
}

Status AgentLink::deleteDesktop(const HostAddress& host, const DesktopSpec& d) {
  AULA_TRY(call(options_, host, fmt::format("/v1/domains/{}/delete", d.name),
                Json{{"disk_path", d.diskPath}}, std::chrono::seconds(60)));
  return {};
}

Result<ConsoleTicket> AgentLink::setTicket(const HostAddress& host, const DesktopSpec& d,
                                           std::chrono::seconds validFor) {
  auto answer =
      AULA_TRY(call(options_, host, fmt::format("/v1/domains/{}/ticket", d.name),
                    Json{{"valid_for_seconds", validFor.count()}}, std::chrono::seconds(30)));
  ConsoleTicket t;
  t.host = answer.value("host", "");
  if (t.host.empty())
    t.host = host.address;
  auto port = [&](const char* field) {
    auto it = answer.find(field);
    return it != answer.end() && it->is_number_integer() ? it->get<int>() : 0;
  };
  t.tlsPort = port("tls_port");
  t.plainPort = port("port");
  t.ticket = answer.value("ticket", "");
  t.expires = std::chrono::system_clock::time_point(
      std::chrono::seconds(answer.value("expires_at", std::int64_t{0})));
  t.hostSubject = host.spiceSubject;
  if (t.ticket.empty() || (t.tlsPort == 0 && t.plainPort == 0)) {
    return makeError(Errc::kInternal, "The agent on host '{}' set no usable ticket for '{}'.",
                     host.name, d.name);
  }
  return t;
}

Result<TemplateImage> AgentLink::makeTemplate(const HostAddress& host, const DesktopSpec& d,
                                              const std::string& templateDisk, TemplateMode mode) {
  auto answer = AULA_TRY(call(options_, host, "/v1/templates/from-desktop",
                              Json{{"domain", d.name},
                                   {"disk_path", d.diskPath},
                                   {"template_storage", kTemplateStorage},
                                   {"template_disk", templateDisk},
                                   {"mode", templateModeName(mode)}},
                              options_.templateTimeout));
  TemplateImage image;
  if (auto it = answer.find("size_bytes"); it != answer.end() && it->is_number_integer())
    image.sizeBytes = it->get<std::int64_t>();
  if (auto it = answer.find("backing"); it != answer.end() && it->is_string())
    image.backing = it->get<std::string>();
  return image;
}

Status AgentLink::deleteBase(const HostAddress& host, const std::string& storage,
                             const std::string& disk) {
  // The agent reads the header of every image in its storages first.
  AULA_TRY(call(options_, host, "/v1/templates/delete-base",
                Json{{"storage", storage}, {"disk", disk}}, std::chrono::seconds(300)));
  return {};
}

}  // namespace aula::broker
