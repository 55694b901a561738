// HostLink over mutual TLS to aula-agent (see agent_link.hpp).
#include "aula/broker/agent_link.hpp"

#include <fmt/format.h>

#include "aula/common/agent_protocol.hpp"
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

// The agent's answer read as the protocol's message, or why it cannot be.
template <typename M, typename Parse>
Result<M> read(const HostAddress& host, const Json& answer, Parse parse) {
  auto message = parse(answer);
  if (!message) {
    return makeError(Errc::kInternal, "The agent on host '{}' answered something unexpected: {}",
                     host.name, message.error().message());
  }
  return std::move(*message);
}

// One command to one agent; the answer's JSON, or the agent's refusal with
// its own sentence, or why it could not be reached.
Result<Json> call(const AgentLinkOptions& o, const HostAddress& host, std::string_view path,
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
                        .url = baseUrl(host) + std::string(path),
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

Result<Observed> AgentLink::startDesktop(const HostAddress& host, const DesktopSpec& d) {
  proto::StartRequest request{.desktopId = d.id,
                              .owner = d.owner,
                              .vcpus = d.vcpus,
                              .memoryMb = d.memoryMb,
                              .video = d.video,
                              .baseStorage = d.templateStorage,
                              .baseDisk = d.baseDisk,
                              .diskPath = d.diskPath,
                              .persistent = d.persistent};
  auto answer =
      AULA_TRY(call(options_, host, proto::domainCommandPath(proto::DomainCommand::kStart, d.name),
                    proto::toJson(request), options_.startTimeout));
  auto status = AULA_TRY(read<proto::DomainStatus>(host, answer, proto::parseDomainStatus));
  if (!status.running) {
    return makeError(Errc::kUnavailable, "The desktop '{}' is {} on host '{}', not running.",
                     d.name, status.state, host.name);
  }
  return Observed{.seq = status.seq};
}

Result<Observed> AgentLink::stopDesktop(const HostAddress& host, const DesktopSpec& d, bool force) {
  proto::StopRequest request{.persistent = d.persistent, .diskPath = d.diskPath};
  std::chrono::seconds timeout(60);
  if (!force) {
    request.graceSeconds = options_.shutdownGrace.count();
    timeout += options_.shutdownGrace;
  }
  auto command = force ? proto::DomainCommand::kPowerOff : proto::DomainCommand::kShutdown;
  auto answer = AULA_TRY(call(options_, host, proto::domainCommandPath(command, d.name),
                              proto::toJson(request), timeout));
  auto status = AULA_TRY(read<proto::DomainStatus>(host, answer, proto::parseDomainStatus));
  if (status.forced) {
    log::info("Desktop {} did not shut down within {} s and was powered off.", d.id,
              options_.shutdownGrace.count());
  }
  return Observed{.seq = status.seq, .forced = status.forced};
}

Status AgentLink::deleteDesktop(const HostAddress& host, const DesktopSpec& d) {
  AULA_TRY(call(options_, host, proto::domainCommandPath(proto::DomainCommand::kDelete, d.name),
                proto::toJson(proto::DeleteRequest{.diskPath = d.diskPath}),
                std::chrono::seconds(60)));
  return {};
}

Result<ConsoleTicket> AgentLink::setTicket(const HostAddress& host, const DesktopSpec& d,
                                           std::chrono::seconds validFor) {
  auto answer =
      AULA_TRY(call(options_, host, proto::domainCommandPath(proto::DomainCommand::kTicket, d.name),
                    proto::toJson(proto::TicketRequest{.validForSeconds = validFor.count()}),
                    std::chrono::seconds(30)));
  auto ticket = AULA_TRY(read<proto::TicketAnswer>(host, answer, proto::parseTicketAnswer));
  ConsoleTicket t;
  t.host = ticket.host.empty() ? host.address : ticket.host;
  t.tlsPort = ticket.tlsPort.value_or(0);
  t.plainPort = ticket.port.value_or(0);
  t.ticket = ticket.ticket;
  t.expires = std::chrono::system_clock::time_point(std::chrono::seconds(ticket.expiresAt));
  t.hostSubject = host.spiceSubject;
  if (t.ticket.empty() || (t.tlsPort == 0 && t.plainPort == 0)) {
    return makeError(Errc::kInternal, "The agent on host '{}' set no usable ticket for '{}'.",
                     host.name, d.name);
  }
  return t;
}

Result<TemplateImage> AgentLink::makeTemplate(const HostAddress& host, const DesktopSpec& d,
                                              const std::string& templateDisk, TemplateMode mode) {
  proto::TemplateRequest request{.domain = d.name,
                                 .diskPath = d.diskPath,
                                 .templateStorage = kTemplateStorage,
                                 .templateDisk = templateDisk,
                                 .mode = mode};
  auto answer = AULA_TRY(call(options_, host, proto::kTemplateFromDesktopRoute,
                              proto::toJson(request), options_.templateTimeout));
  auto made = AULA_TRY(read<proto::TemplateAnswer>(host, answer, proto::parseTemplateAnswer));
  return TemplateImage{.sizeBytes = made.sizeBytes, .backing = made.backing};
}

Status AgentLink::deleteBase(const HostAddress& host, const std::string& storage,
                             const std::string& disk) {
  // The agent reads the header of every image in its storages first.
  AULA_TRY(call(options_, host, proto::kDeleteBaseRoute,
                proto::toJson(proto::DeleteBaseRequest{.storage = storage, .disk = disk}),
                std::chrono::seconds(300)));
  return {};
}

}  // namespace aula::broker
