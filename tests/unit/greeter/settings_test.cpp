// Where the greeter finds its broker: kernel command line, file, flags.
#include "aula/greeter/settings.hpp"

#include <map>
#include <string>

#include <gtest/gtest.h>

namespace aula::greeter {
namespace {

constexpr std::string_view kFingerprint =
    "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:"
    "89";

TEST(GreeterSettingsTest, TheKernelCommandLineGivesTheBrokerAndItsCa) {
  auto parameters = kernelParameters(
      "BOOT_IMAGE=vmlinuz quiet aula.broker=https://aula.school:8443 "
      "aula.ca_fp=" +
      std::string(kFingerprint) + " aula.lang=ca \"aula.note=a b\"\n");
  EXPECT_EQ(parameters["aula.broker"], "https://aula.school:8443");
  EXPECT_EQ(parameters["aula.note"], "a b");
  EXPECT_FALSE(parameters.contains("quiet"));
  auto settings = resolveSettings(parameters, {}, {});
  ASSERT_TRUE(settings) << settings.error().message();
  EXPECT_EQ(settings->brokerUrl, "https://aula.school:8443");
  EXPECT_EQ(settings->language, Language::kCatalan);
  EXPECT_EQ(settings->caFingerprint.size(), kFingerprint.size());
}

TEST(GreeterSettingsTest, FlagsWinOverTheFileAndTheFileOverTheKernel) {
  auto settings = resolveSettings(
      {{"aula.broker", "https://kernel:1"}, {"aula.ca_fp", std::string(kFingerprint)}},
      {{"broker_url", "https://file:2"}, {"language", "fr"}}, {{"broker_url", "https://flag:3"}});
  ASSERT_TRUE(settings) << settings.error().message();
  EXPECT_EQ(settings->brokerUrl, "https://flag:3");
  EXPECT_EQ(settings->language, Language::kFrench);
}

TEST(GreeterSettingsTest, SoundPlaysOnTheDefaultDeviceUnlessToldOtherwise) {
  const std::map<std::string, std::string> kernel = {{"aula.broker", "https://aula.school:8443"},
                                                     {"aula.ca_fp", std::string(kFingerprint)}};
  auto plain = resolveSettings(kernel, {}, {});
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_EQ(plain->audioDevice, "default");

  auto withCard = kernel;
  withCard["aula.audio"] = "hw:1,0";
  auto fromKernel = resolveSettings(withCard, {}, {});
  ASSERT_TRUE(fromKernel) << fromKernel.error().message();
  EXPECT_EQ(fromKernel->audioDevice, "hw:1,0");

  auto off = resolveSettings(withCard, {{"audio_device", "off"}}, {});
  ASSERT_TRUE(off) << off.error().message();
  EXPECT_EQ(off->audioDevice, "") << "off: the desktop plays without sound";

  auto empty = resolveSettings(kernel, {{"audio_device", ""}}, {});
  ASSERT_FALSE(empty);
  EXPECT_NE(empty.error().message().find("or say off"), std::string::npos)
      << empty.error().message();
}

TEST(GreeterSettingsTest, WhatIsMissingOrWrongIsNamedWithWhereToGiveIt) {
  auto none = resolveSettings({}, {}, {});
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message().find("aula.broker="), std::string::npos);
  auto plain = resolveSettings({{"aula.broker", "http://aula:80"}}, {}, {});
  ASSERT_FALSE(plain);
  EXPECT_NE(plain.error().message().find("https://"), std::string::npos);
  auto noCa = resolveSettings({{"aula.broker", "https://aula:8443"}}, {}, {});
  ASSERT_FALSE(noCa);
  EXPECT_NE(noCa.error().message().find("aula.ca_fp="), std::string::npos);
  auto badCa =
      resolveSettings({{"aula.broker", "https://aula:8443"}, {"aula.ca_fp", "12:34"}}, {}, {});
  ASSERT_FALSE(badCa);
  EXPECT_NE(badCa.error().message().find("'12:34'"), std::string::npos);
  auto language = resolveSettings({{"aula.broker", "https://aula:8443"}}, {{"ca_file", "/ca.pem"}},
                                  {{"language", "de"}});
  ASSERT_FALSE(language);
  EXPECT_NE(language.error().message().find("en, es, ca or fr"), std::string::npos);
}

}  // namespace
}  // namespace aula::greeter
