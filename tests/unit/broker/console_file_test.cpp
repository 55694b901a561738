// The console as remote-viewer's .vv file: exact text for a TLS-only
// console, for one with a plain port too (tests), and for values that could
// break the file's lines or groups.
#include "aula/broker/console_file.hpp"

#include <gtest/gtest.h>

namespace aula::broker {
namespace {

constexpr const char* kCaPem =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBszCCAVmgAwIBAgIUZ3R0\n"
    "-----END CERTIFICATE-----\n";

ConsoleFile tlsOnly() {
  return {.host = "hv1.school.example",
          .tlsPort = 5912,
          .password = "q5JdXk2mYw9vRt3L",
          .caPem = kCaPem,
          .hostSubject = "O=Aula,CN=hv1",
          .title = "Informatik"};
}

TEST(ConsoleFileTest, TlsOnlyRequiresTlsOnEveryChannel) {
  EXPECT_EQ(renderVirtViewerFile(tlsOnly()),
            "[virt-viewer]\n"
            "type=spice\n"
            "host=hv1.school.example\n"
            "tls-port=5912\n"
            "password=q5JdXk2mYw9vRt3L\n"
            "ca=-----BEGIN CERTIFICATE-----\\nMIIBszCCAVmgAwIBAgIUZ3R0\\n"
            "-----END CERTIFICATE-----\\n\n"
            "host-subject=O=Aula,CN=hv1\n"
            "title=Informatik\n"
            "delete-this-file=1\n"
            "usb-filter=-1,-1,-1,-1,0\n"
            "secure-channels=all\n");
}

TEST(ConsoleFileTest, APlainPortIsOfferedBesideTlsWithoutSecureChannels) {
  auto console = tlsOnly();
  console.plainPort = 5913;
  EXPECT_EQ(renderVirtViewerFile(console),
            "[virt-viewer]\n"
            "type=spice\n"
            "host=hv1.school.example\n"
            "port=5913\n"
            "tls-port=5912\n"
            "password=q5JdXk2mYw9vRt3L\n"
            "ca=-----BEGIN CERTIFICATE-----\\nMIIBszCCAVmgAwIBAgIUZ3R0\\n"
            "-----END CERTIFICATE-----\\n\n"
            "host-subject=O=Aula,CN=hv1\n"
            "title=Informatik\n"
            "delete-this-file=1\n"
            "usb-filter=-1,-1,-1,-1,0\n");
}

TEST(ConsoleFileTest, TheTemplatesUsbPolicyIsTheViewersFilter) {
  const std::pair<std::string, std::string> policies[] = {
      {"storage", "\nusb-filter=0x08,-1,-1,-1,1|-1,-1,-1,-1,0\nusb-autoshare=1\n"},
      {"all", "\nusb-filter=-1,-1,-1,-1,1\nusb-autoshare=1\n"},
      {"none", "\nusb-filter=-1,-1,-1,-1,0\nsecure-channels"}};
  for (const auto& [usb, lines] : policies) {
    auto console = tlsOnly();
    console.usb = usb;
    auto text = renderVirtViewerFile(console);
    EXPECT_NE(text.find(lines), std::string::npos) << usb << ":\n" << text;
  }
}

TEST(ConsoleFileTest, ATitleStaysOneLineWithoutGroupBrackets) {
  auto console = tlsOnly();
  console.title = "Klasse [7b]\n[virt-viewer]\r\npassword=x\t end ";
  auto text = renderVirtViewerFile(console);
  EXPECT_NE(text.find("\ntitle=Klasse (7b) (virt-viewer) password=x end\n"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("\npassword=x"), std::string::npos) << text;
  EXPECT_EQ(text.find('[', 1), std::string::npos) << "only the group header has a bracket";
}

TEST(ConsoleFileTest, ATitleOfOnlyBlanksIsLeftOut) {
  auto console = tlsOnly();
  console.title = " \n\t ";
  EXPECT_EQ(renderVirtViewerFile(console).find("title="), std::string::npos);
}

TEST(ConsoleFileTest, AHostSubjectWithCommasAndSpacesPassesThroughUnchanged) {
  auto console = tlsOnly();
  console.hostSubject = "C=DE,O=Schule am See, e.V.,CN=hv1.school.example";
  auto text = renderVirtViewerFile(console);
  EXPECT_NE(text.find("\nhost-subject=C=DE,O=Schule am See, e.V.,CN=hv1.school.example\n"),
            std::string::npos)
      << text;
}

TEST(ConsoleFileTest, OtherValuesAreEscapedTheWayGKeyFileReadsThem) {
  auto console = tlsOnly();
  console.host = "hv1\n[evil]";
  console.password = "a\\b";
  console.hostSubject = " O=Aula";
  auto text = renderVirtViewerFile(console);
  EXPECT_NE(text.find("\nhost=hv1\\n[evil]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\npassword=a\\\\b\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nhost-subject=\\sO=Aula\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("\n[evil]"), std::string::npos) << text;
}

}  // namespace
}  // namespace aula::broker
