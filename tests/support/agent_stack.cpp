// The whole of Aula on one machine (see agent_stack.hpp).
#include "support/agent_stack.hpp"

namespace aula::test {

process::Outcome runProgram(std::vector<std::string> argv, std::chrono::milliseconds timeout) {
  process::SystemRunner runner;
  auto outcome = runner.run(process::Command{.argv = std::move(argv), .timeout = timeout});
  if (!outcome)
    throw std::runtime_error(outcome.error().message());
  return *outcome;
}

std::string virsh(std::vector<std::string> args) {
  args.insert(args.begin(), {"virsh", "-c", Libvirtd::kUri});
  auto out = runProgram(std::move(args));
  return out.out + out.err;
}

std::string domainState(const std::string& name) {
  auto out = runProgram({"virsh", "-c", Libvirtd::kUri, "domstate", name});
  auto text = out.out;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.pop_back();
  return out.succeeded() ? text : "absent";
}

std::string qemuIo(const std::string& domain, const std::string& command) {
  fs::path log = fmt::format("/var/log/libvirt/qemu/{}.log", domain);
  std::error_code ec;
  auto before = fs::exists(log, ec) ? fs::file_size(log, ec) : 0;
  virsh(
      {"qemu-monitor-command", "--hmp", domain,
       fmt::format("qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"{}\"", command)});
  std::string added;
  for (int i = 0; i < 20 && added.find("bytes at offset") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto text = readFile(log);
    added = text.size() > before ? text.substr(before) : "";
  }
  return added;
}

}  // namespace aula::test
