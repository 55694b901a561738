// The greeter running: the state machine fed with keys, time and the
// answers of the broker (asked on a worker thread, one request at a time)
// and of the SPICE session, its effects carried out, its screens drawn on
// every head of the Output, the guest's frames copied onto the first. Lives
// on the default GLib main context, which spice-client-glib also uses; the
// app and the tests run that context.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "aula/greeter/greeter.hpp"
#include "aula/greeter/output.hpp"
#include "aula/greeter/ports.hpp"
#include "aula/greeter/view.hpp"

namespace aula::greeter {

struct RuntimeParts {
  Broker& broker;
  Session& session;
  Output& output;
  Translations translations;
  Options options;
  MachineInfo machine;
  // The keyboard layout to read keys with (the input adapter's), if any.
  std::function<void(const std::string& xkb)> setLayout;
};

class Runtime {
 public:
  explicit Runtime(RuntimeParts parts);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // On the main context's thread.
  void start();
  void key(const Key& key);
  // The mouse: to the guest while the desktop is on screen, with the
  // greeter's own arrow drawn where it points.
  void pointer(const Pointer& pointer);
  // This PC's address, MAC or image as read now: the screens show them
  // (redrawn when they changed, as when DHCP answers after the start).
  void machine(MachineInfo info);
  const Greeter& greeter() const;
  // Frames presented on head 0 since start (for tests and benchmarks).
  int framesPresented() const;
  // What a click on head 0 reaches now, and where (for tests).
  std::vector<Hit> clickable() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::greeter
