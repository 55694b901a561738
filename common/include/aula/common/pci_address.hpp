// A PCI device's address as the kernel names it in sysfs: "0000:01:00.0",
// the spelling the agent, the broker and aulactl all use.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace aula {

// DOMAIN:BUS:SLOT.FUNCTION in lower-case hex ("0000:01:00.0"); a short
// "01:00.0" gets domain 0000. nullopt for anything else.
std::optional<std::string> canonicalPciAddress(std::string_view text);

}  // namespace aula
