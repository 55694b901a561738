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

}  // namespace aula::test
