// A template's USB policy ("none", "storage", "all": which USB devices a
// viewer hands to the desktop) as the USB redirection filter that
// spice-client-glib and remote-viewer read: rules "class,vendor,product,
// version,allow" separated by '|', the first that matches decides, -1 for
// any. Mass storage is USB class 0x08.
#pragma once

#include <optional>
#include <string_view>

namespace aula {

inline std::optional<std::string_view> usbRedirFilter(std::string_view policy) {
  if (policy == "none")
    return "-1,-1,-1,-1,0";
  if (policy == "storage")
    return "0x08,-1,-1,-1,1|-1,-1,-1,-1,0";
  if (policy == "all")
    return "-1,-1,-1,-1,1";
  return std::nullopt;
}

}  // namespace aula
