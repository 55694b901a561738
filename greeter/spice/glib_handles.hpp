// GObjects and GLib signal connections in RAII, for the code that talks to
// spice-client-glib: the greeter's session and the tests' aula-spice-probe.
#pragma once

#include <memory>
#include <utility>

#include <glib-object.h>

namespace aula::glib {

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

// A GLib signal handler that is disconnected when this goes away.
class SignalConnection {
 public:
  SignalConnection(gpointer instance, const char* signal, GCallback callback, gpointer data)
      : instance_(static_cast<GObject*>(g_object_ref(instance))),
        id_(g_signal_connect_data(instance, signal, callback, data, nullptr, GConnectFlags{})) {}
  ~SignalConnection() {
    if (instance_ != nullptr) {
      g_signal_handler_disconnect(instance_, id_);
      g_object_unref(instance_);
    }
  }
  SignalConnection(SignalConnection&& other) noexcept
      : instance_(std::exchange(other.instance_, nullptr)), id_(other.id_) {}
  SignalConnection(const SignalConnection&) = delete;
  SignalConnection& operator=(const SignalConnection&) = delete;
  SignalConnection& operator=(SignalConnection&&) = delete;

 private:
  GObject* instance_;
  gulong id_;
};

}  // namespace aula::glib
