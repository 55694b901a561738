// What a screen says, in the chosen language, as plain data: the renderer
// only lays it out and draws it. Translations are gettext catalogs (.po
// files compiled to .mo by msgfmt), read by our own small .mo reader so that
// the language can change while the greeter runs without any locale
// installed in the image.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "aula/common/result.hpp"
#include "aula/greeter/greeter.hpp"
#include "aula/greeter/output.hpp"

namespace aula::greeter {

// One language's catalog: msgid -> msgstr.
using Catalog = std::unordered_map<std::string, std::string>;

// Parses a GNU .mo file (either byte order). Entries with an empty msgstr,
// and the header entry, are left out.
Result<Catalog> parseMo(std::string_view bytes);

class Translations {
 public:
  Translations() = default;
  // Reads <dir>/<code>/LC_MESSAGES/aula-greeter.mo for each language other
  // than English; a language whose catalog is missing or broken shows in
  // English, and the error says which.
  static Result<Translations> load(const std::filesystem::path& localeDir);
  void add(Language language, Catalog catalog);

  // The translation of an English message, or the message itself.
  std::string_view get(Language language, std::string_view msgid) const;
  bool has(Language language, std::string_view msgid) const;

 private:
  std::map<Language, Catalog> catalogs_;
};

// A message with {} placeholders, translated, then formatted; a translation
// whose placeholders do not fit falls back to the English message.
std::string translateFormat(const Translations& translations, Language language,
                            std::string_view msgid, const std::vector<std::string>& args);

struct Field {
  std::string label;
  std::string value;  // the password as dots
  bool focused = false;
  bool choice = false;  // a value picked with Left/Right
};

struct Row {
  std::string name;
  std::string detail;  // template, persistent or not
  std::string state;
  DesktopState stateKind = DesktopState::kStopped;
  bool selected = false;
};

struct Button {
  std::string label;
  bool focused = false;
  bool enabled = true;
};

struct Callout {
  std::string headline;
  std::string body;    // what to do
  std::string detail;  // the broker's or the session's own sentence, if any
  bool error = true;
};

struct View {
  Screen screen = Screen::kStarting;
  std::string title;
  std::string subtitle;
  std::vector<Field> fields;    // kLogin
  std::vector<Row> rows;        // kDesktops
  std::vector<Button> buttons;  // kLogin: log in; kDesktops: shut down, log out; menus
  std::optional<Callout> notice;
  bool busy = false;   // a spinner: waiting for the broker or SPICE
  std::string hints;   // the keys this screen takes
  std::string footer;  // this PC: address, MAC, image version
  std::string schoolName;
  bool menu = false;  // kSession: the overlay menu is open
};

View describe(const Greeter& greeter, const Translations& translations);

// Where a drawn field, row or button is on a head: what a click there
// reaches (Click's target and index).
struct Hit {
  Rect rect;
  Target target = Target::kButton;
  std::size_t index = 0;
  int turn = 0;  // a choice field's ‹ (-1) or › (1)
};

// Every English message the greeter shows, for the catalog check (every
// language must translate each of them).
std::vector<std::string_view> allMessages();

}  // namespace aula::greeter
