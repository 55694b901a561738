// The greeter's words: the .mo reader, every message translated in every
// language, placeholders that survive a broken translation, and what each
// screen says.
#include "aula/greeter/view.hpp"

#include <cstring>

#include <gtest/gtest.h>
#include <linux/input-event-codes.h>

namespace aula::greeter {
namespace {

using namespace std::chrono_literals;

Translations loadCatalogs() {
  auto loaded = Translations::load(AULA_GREETER_LOCALE_DIR);
  EXPECT_TRUE(loaded) << loaded.error().message();
  return loaded ? std::move(loaded).value() : Translations{};
}

TEST(TranslationsTest, EveryMessageIsTranslatedInEveryLanguage) {
  const Translations translations = loadCatalogs();
  for (Language language : kLanguages) {
    if (language == Language::kEnglish)
      continue;
    for (std::string_view message : allMessages()) {
      EXPECT_TRUE(translations.has(language, message))
          << languageName(language) << " lacks: " << message;
      const auto braces = [](std::string_view text) {
        std::size_t n = 0;
        for (std::size_t at = text.find("{}"); at != std::string_view::npos;
             at = text.find("{}", at + 2))
          ++n;
        return n;
      };
      EXPECT_EQ(braces(translations.get(language, message)), braces(message))
          << languageName(language) << " changes the placeholders of: " << message;
    }
  }
}

TEST(TranslationsTest, AMissingCatalogIsNamed) {
  auto loaded = Translations::load("/nonexistent");
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("Español"), std::string::npos)
      << loaded.error().message();
}

TEST(TranslationsTest, ATranslationWithBrokenPlaceholdersFallsBackToEnglish) {
  Translations translations;
  translations.add(Language::kFrench, {{"Try again in {} s.", "Réessayez dans {:q} s."}});
  EXPECT_EQ(translateFormat(translations, Language::kFrench, "Try again in {} s.", {"30"}),
            "Try again in 30 s.");
}

TEST(TranslationsTest, MoFilesThatAreNotMoFilesAreRefused) {
  EXPECT_FALSE(parseMo("short"));
  std::string bytes(28, '\0');
  EXPECT_FALSE(parseMo(bytes)) << "wrong magic";
  const std::uint32_t magic = 0x950412de;
  const std::uint32_t count = 5;
  const std::uint32_t table = 1000;  // past the end
  std::memcpy(bytes.data(), &magic, 4);
  std::memcpy(bytes.data() + 8, &count, 4);
  std::memcpy(bytes.data() + 12, &table, 4);
  std::memcpy(bytes.data() + 16, &table, 4);
  EXPECT_FALSE(parseMo(bytes)) << "a table past the end";
}

Key press(std::uint32_t code, std::string text = {}) {
  return Key{code, true, std::move(text)};
}

TEST(ViewTest, TheLoginSaysWhatWentWrongInTheChosenLanguage) {
  const Translations translations = loadCatalogs();
  Instant now{};
  Greeter greeter({}, {"10.0.2.15", "52:54:00:12:34:56", "2026.12"});
  greeter.start(now);
  greeter.handle(BrokerReady{School{"IES Aula", "", 300s}}, now);
  View view = describe(greeter, translations);
  EXPECT_EQ(view.title, "Log in");
  EXPECT_EQ(view.subtitle, "IES Aula");
  ASSERT_EQ(view.fields.size(), 4u);
  EXPECT_TRUE(view.fields[0].focused);
  EXPECT_EQ(view.footer, "This PC: 10.0.2.15 · 52:54:00:12:34:56 · image 2026.12");

  greeter.handle(press(KEY_TAB), now);
  greeter.handle(press(KEY_TAB), now);
  greeter.handle(press(KEY_RIGHT), now);
  greeter.handle(press(KEY_RIGHT), now);  // Català
  greeter.handle(press(KEY_TAB), now);
  greeter.handle(press(KEY_TAB), now);
  greeter.handle(press(KEY_TAB), now);  // the user name
  for (char c : std::string("anna"))
    greeter.handle(press(KEY_A, std::string(1, c)), now);
  greeter.handle(press(KEY_TAB), now);
  greeter.handle(press(KEY_A, "x"), now);
  view = describe(greeter, translations);
  EXPECT_EQ(view.fields[1].value, "●") << "the password shows as dots";
  greeter.handle(press(KEY_ENTER), now);
  greeter.handle(LoginRefused{Notice::kWrongPassword, "", 0}, now);
  view = describe(greeter, translations);
  EXPECT_EQ(view.title, "Inicia la sessió");
  ASSERT_TRUE(view.notice);
  EXPECT_TRUE(view.notice->error);
  EXPECT_EQ(view.notice->headline, "El nom d'usuari o la contrasenya no són correctes.");
  EXPECT_EQ(view.fields[3].value, "Català") << "the layout followed the language";
}

TEST(ViewTest, TheTroubleScreenShowsTheCountdownAndThisPc) {
  const Translations translations = loadCatalogs();
  Instant now{};
  Greeter greeter({}, {"10.0.2.15", "52:54:00:12:34:56", "2026.12"});
  greeter.start(now);
  greeter.handle(BrokerFailed{Notice::kBrokerUnreachable, "Connection refused."}, now);
  greeter.handle(Tick{}, now + 2s);
  const View view = describe(greeter, translations);
  ASSERT_TRUE(view.notice);
  EXPECT_EQ(view.title, "Cannot reach the Aula server.");
  EXPECT_NE(view.notice->body.find("Trying again in 3 s."), std::string::npos) << view.notice->body;
  EXPECT_EQ(view.notice->detail, "Connection refused.");
  EXPECT_NE(view.footer.find("52:54:00:12:34:56"), std::string::npos);
}

TEST(ViewTest, TheListShowsStatesAndWhichDesktopsKeepChanges) {
  const Translations translations = loadCatalogs();
  Instant now{};
  Greeter greeter;
  greeter.start(now);
  greeter.handle(BrokerReady{}, now);
  greeter.handle(press(KEY_A, "a"), now);
  greeter.handle(press(KEY_ENTER), now);
  greeter.handle(press(KEY_ENTER), now);
  greeter.handle(LoggedIn{"Anna"}, now);
  greeter.handle(DesktopsListed{{{1, "Informatik", "Debian 12", DesktopState::kRunning, true},
                                 {2, "Exam", "Exam image", DesktopState::kStopped, false}}},
                 now);
  const View view = describe(greeter, translations);
  ASSERT_EQ(view.rows.size(), 2u);
  EXPECT_EQ(view.rows[0].state, "Running");
  EXPECT_EQ(view.rows[0].detail, "Debian 12 · keeps your changes");
  EXPECT_EQ(view.rows[1].detail, "Exam image · starts fresh each time");
  EXPECT_TRUE(view.rows[0].selected);
  EXPECT_TRUE(view.buttons[0].enabled) << "a running desktop can be shut down";
}

}  // namespace
}  // namespace aula::greeter
