// spice-client-glib behind Session: one SpiceSession per connection, its
// channels' signals guarded (nothing throws through GLib), handles in RAII.
#include "spice_session.hpp"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include <spice-client.h>
#include <sys/mman.h>
#include <unistd.h>

#include "aula/common/callback_guard.hpp"
#include "aula/common/file.hpp"
#include "aula/common/log.hpp"
#include "aula/common/usb_policy.hpp"

#include "alsa_playback.hpp"
#include "glib_handles.hpp"

namespace aula::greeter {

namespace {

using glib::GObjectPtr;
using glib::SignalConnection;

std::string reasonOf(SpiceChannel* channel, std::string_view fallback) {
  const GError* error = spice_channel_get_error(channel);
  if (error != nullptr && error->message != nullptr && *error->message != '\0')
    return error->message;
  return std::string(fallback);
}

constexpr std::uint32_t kCtrl = 0x1d;
constexpr std::uint32_t kAlt = 0x38;
constexpr std::uint32_t kDelete = 0x153;

}  // namespace

struct SpiceSession::Impl {
  explicit Impl(std::string audioDevice) {
    if (!audioDevice.empty())
      audio = std::make_unique<AlsaPlayback>(std::move(audioDevice));
  }

  GObjectPtr<::SpiceSession> session;
  GObjectPtr<SpiceChannel> main;
  GObjectPtr<SpiceChannel> display;
  GObjectPtr<SpiceChannel> inputs;
  std::vector<SignalConnection> connections;
  file::UniqueFd caFile;  // a memfd: the CA as a path spice-client-glib can read
  Listener listener;
  bool opened = false;
  bool ended = false;
  bool warnedFormat = false;
  std::string where;
  // The desktop's sound, if this PC plays it.
  std::unique_ptr<AlsaPlayback> audio;
  bool warnedAudio = false;
  // USB: the manager while devices go to the desktop, the policy's filter,
  // and the last failure to move each device (by UsbDevice::id).
  SpiceUsbDeviceManager* usbManager = nullptr;  // owned by `session`
  std::string usbFilter;
  std::map<std::string, std::string> usbProblems;
  // Expires with this Impl: a USB move that finishes later finds it gone.
  std::shared_ptr<int> token = std::make_shared<int>(0);

  void end(SessionEnd why, std::string reason) {
    if (ended)
      return;
    ended = true;
    if (listener.ended)
      listener.ended(why, std::move(reason));
  }

  static void onChannelNew(::SpiceSession*, SpiceChannel* channel, gpointer data) {
    guardCallback("a SPICE channel-new handler",
                  [&] { static_cast<Impl*>(data)->channelNew(channel); });
  }
  static void onChannelEvent(SpiceChannel* channel, SpiceChannelEvent event, gpointer data) {
    guardCallback("a SPICE channel-event handler",
                  [&] { static_cast<Impl*>(data)->channelEvent(channel, event); });
  }
  static void onPrimaryCreate(SpiceChannel*, gint, gint width, gint height, gint, gint, gpointer,
                              gpointer data) {
    guardCallback("a SPICE display-primary-create handler",
                  [&] { static_cast<Impl*>(data)->drawn(0, 0, width, height); });
  }
  static void onInvalidate(SpiceChannel*, gint x, gint y, gint width, gint height, gpointer data) {
    guardCallback("a SPICE display-invalidate handler",
                  [&] { static_cast<Impl*>(data)->drawn(x, y, width, height); });
  }

  void channelNew(SpiceChannel* channel) {
    connections.emplace_back(channel, "channel-event", reinterpret_cast<GCallback>(&onChannelEvent),
                             this);
    int id = 0;
    g_object_get(channel, "channel-id", &id, nullptr);
    if (SPICE_IS_MAIN_CHANNEL(channel)) {
      main.reset(static_cast<SpiceChannel*>(g_object_ref(channel)));
      return;
    }
    if (SPICE_IS_DISPLAY_CHANNEL(channel) && id == 0 && !display) {
      display.reset(static_cast<SpiceChannel*>(g_object_ref(channel)));
      connections.emplace_back(channel, "display-primary-create",
                               reinterpret_cast<GCallback>(&onPrimaryCreate), this);
      connections.emplace_back(channel, "display-invalidate",
                               reinterpret_cast<GCallback>(&onInvalidate), this);
      spice_channel_connect(channel);
      return;
    }
    if (SPICE_IS_INPUTS_CHANNEL(channel) && !inputs) {
      inputs.reset(static_cast<SpiceChannel*>(g_object_ref(channel)));
      spice_channel_connect(channel);
      return;
    }
    if (SPICE_IS_PLAYBACK_CHANNEL(channel) && audio) {
      connections.emplace_back(channel, "playback-start",
                               reinterpret_cast<GCallback>(&onPlaybackStart), this);
      connections.emplace_back(channel, "playback-data",
                               reinterpret_cast<GCallback>(&onPlaybackData), this);
      connections.emplace_back(channel, "playback-stop",
                               reinterpret_cast<GCallback>(&onPlaybackStop), this);
      connections.emplace_back(channel, "notify::volume",
                               reinterpret_cast<GCallback>(&onVolumeChanged), this);
      connections.emplace_back(channel, "notify::mute",
                               reinterpret_cast<GCallback>(&onVolumeChanged), this);
      spice_channel_connect(channel);
      return;
    }
    // A slot for one redirected USB device; the USB device manager fills
    // it as the policy's filter allows.
    if (SPICE_IS_USBREDIR_CHANNEL(channel))
      spice_channel_connect(channel);
  }

  // Sound: SPICE says the format when the desktop starts playing, sends
  // the samples, and says when it stops.
  static void onPlaybackStart(SpicePlaybackChannel*, gint format, gint channels, gint rate,
                              gpointer data) {
    guardCallback("a SPICE playback-start handler",
                  [&] { static_cast<Impl*>(data)->playbackStart(format, channels, rate); });
  }
  static void onPlaybackData(SpicePlaybackChannel*, gpointer samples, gint size, gpointer data) {
    guardCallback("a SPICE playback-data handler", [&] {
      auto* impl = static_cast<Impl*>(data);
      if (impl->audio && size > 0)
        impl->audio->write(samples, static_cast<std::size_t>(size));
    });
  }
  static void onPlaybackStop(SpicePlaybackChannel*, gpointer data) {
    guardCallback("a SPICE playback-stop handler", [&] {
      auto* impl = static_cast<Impl*>(data);
      if (impl->audio && impl->audio->playing()) {
        log::info("The desktop's sound stopped ({} frames played, {} dropped).",
                  impl->audio->framesWritten(), impl->audio->framesDropped());
        impl->audio->stop();
      }
    });
  }

  // The desktop's own volume and mute: QEMU leaves the samples at full
  // level and tells the client what the guest's mixer says.
  static void onVolumeChanged(SpiceChannel* channel, GParamSpec*, gpointer data) {
    guardCallback("a SPICE volume handler",
                  [&] { static_cast<Impl*>(data)->volumeChanged(channel); });
  }

  void volumeChanged(SpiceChannel* channel) {
    if (!audio)
      return;
    guint channels = 0;
    gpointer levels = nullptr;
    gboolean muted = FALSE;
    g_object_get(channel, "nchannels", &channels, "volume", &levels, "mute", &muted, nullptr);
    Volume volume;
    volume.muted = muted != FALSE;
    if (levels != nullptr) {
      const auto* level = static_cast<const guint16*>(levels);
      volume.levels.assign(level, level + channels);
    }
    if (volume.levels == audio->volume().levels && volume.muted == audio->volume().muted)
      return;
    std::string said;
    for (auto l : volume.levels)
      said += fmt::format("{}{}%", said.empty() ? "" : " ", (l * 100 + 32767) / 65535);
    log::info("The desktop set its sound to {}{}.", said.empty() ? "full" : said,
              volume.muted ? ", muted" : "");
    audio->setVolume(std::move(volume));
  }

  void playbackStart(int format, int channels, int rate) {
    if (!audio)
      return;
    if (format != SPICE_AUDIO_FMT_S16) {
      if (!warnedAudio)
        log::warn(
            "The desktop sends sound in SPICE audio format {}, which the greeter cannot "
            "play.",
            format);
      warnedAudio = true;
      return;
    }
    if (auto started = audio->start(channels, rate); !started) {
      // Said once per session: a PC without a sound card is no error.
      if (!warnedAudio)
        log::warn("{} The desktop plays without sound here.", started.error().message());
      warnedAudio = true;
      return;
    }
    log::info("The desktop's sound plays on '{}' ({} channel(s), {} Hz).", audio->device(),
              channels, rate);
  }

  void channelEvent(SpiceChannel* channel, SpiceChannelEvent event) {
    const bool isMain = SPICE_IS_MAIN_CHANNEL(channel);
    if (event == SPICE_CHANNEL_OPENED) {
      if (isMain && !opened) {
        opened = true;
        if (listener.opened)
          listener.opened();
      }
      return;
    }
    if (event == SPICE_CHANNEL_NONE || event == SPICE_CHANNEL_SWITCHING)
      return;
    if (!isMain && event == SPICE_CHANNEL_CLOSED)
      return;  // the main channel's end follows
    switch (event) {
      case SPICE_CHANNEL_ERROR_AUTH:
        end(SessionEnd::kFailed, fmt::format("The desktop at {} refused the ticket: {}", where,
                                             reasonOf(channel, "it was wrong or had expired.")));
        return;
      case SPICE_CHANNEL_ERROR_TLS:
        end(SessionEnd::kFailed,
            fmt::format("The desktop's certificate at {} is not signed by the Aula CA or names "
                        "another host: {}",
                        where, reasonOf(channel, "the TLS handshake failed.")));
        return;
      case SPICE_CHANNEL_ERROR_CONNECT:
        if (!opened) {
          end(SessionEnd::kFailed, fmt::format("Cannot connect to the desktop at {}: {}", where,
                                               reasonOf(channel, "the connection failed.")));
          return;
        }
        break;
      default:
        break;
    }
    end(opened ? SessionEnd::kLinkLost : SessionEnd::kFailed,
        fmt::format("The connection to the desktop at {} ended: {}", where,
                    reasonOf(channel, "it was closed.")));
  }

  std::optional<Frame> frame() {
    if (!display)
      return std::nullopt;
    SpiceDisplayPrimary primary{};
    if (!spice_display_channel_get_primary(display.get(), 0, &primary) || primary.data == nullptr ||
        primary.width <= 0 || primary.height <= 0)
      return std::nullopt;
    if (primary.format != SPICE_SURFACE_FMT_32_xRGB &&
        primary.format != SPICE_SURFACE_FMT_32_ARGB) {
      if (!warnedFormat)
        log::warn(
            "The desktop's screen has SPICE surface format {}, which the greeter cannot show.",
            static_cast<int>(primary.format));
      warnedFormat = true;
      return std::nullopt;
    }
    return Frame{reinterpret_cast<const std::uint32_t*>(primary.data), primary.width,
                 primary.height, primary.stride};
  }

  static void onUsbAdded(SpiceUsbDeviceManager*, SpiceUsbDevice* device, gpointer data) {
    guardCallback("a SPICE device-added handler", [&] {
      log::info("USB device plugged in: {}.", describe(device));
      static_cast<Impl*>(data)->usbChanged();
    });
  }
  static void onUsbRemoved(SpiceUsbDeviceManager*, SpiceUsbDevice* device, gpointer data) {
    guardCallback("a SPICE device-removed handler", [&] {
      log::info("USB device pulled out: {}.", describe(device));
      auto* impl = static_cast<Impl*>(data);
      impl->usbProblems.erase(usbId(device));
      impl->usbChanged();
    });
  }
  static void onUsbAutoConnectFailed(SpiceUsbDeviceManager*, SpiceUsbDevice* device, GError* error,
                                     gpointer data) {
    guardCallback("a SPICE auto-connect-failed handler", [&] {
      const std::string reason =
          error != nullptr && error->message != nullptr ? error->message : "no reason given";
      log::warn("The USB device {} could not be handed to the desktop: {}", describe(device),
                reason);
      auto* impl = static_cast<Impl*>(data);
      impl->usbProblems[usbId(device)] = reason;
      impl->usbChanged();
    });
  }
  static std::string describe(SpiceUsbDevice* device) {
    gchar* text = spice_usb_device_get_description(device, nullptr);
    std::string out = text != nullptr ? text : "(unknown)";
    g_free(text);
    return out;
  }
  // "bus-address": spice_usb_device_get_description's 4th and 5th values
  // (manufacturer, product, [vid:pid], bus, address). glibc's fortified
  // printf aborts on a positional format that skips a value, so the first
  // three are printed empty.
  static std::string usbId(SpiceUsbDevice* device) {
    gchar* text = spice_usb_device_get_description(device, "%1$.0s%2$.0s%3$.0s%4$d-%5$d");
    std::string out = text != nullptr ? text : "";
    g_free(text);
    return out;
  }

  struct UsbArray {
    GPtrArray* array = nullptr;
    ~UsbArray() {
      if (array != nullptr)
        g_ptr_array_unref(array);
    }
    std::size_t size() const { return array != nullptr ? array->len : 0; }
    SpiceUsbDevice* at(std::size_t i) const {
      return static_cast<SpiceUsbDevice*>(g_ptr_array_index(array, static_cast<guint>(i)));
    }
  };

  std::vector<UsbDevice> usbDevices() {
    std::vector<UsbDevice> out;
    if (usbManager == nullptr)
      return out;
    UsbArray all{spice_usb_device_manager_get_devices(usbManager)};
    UsbArray allowed{
        spice_usb_device_manager_get_devices_with_filter(usbManager, usbFilter.c_str())};
    for (std::size_t i = 0; i < all.size(); ++i) {
      SpiceUsbDevice* device = all.at(i);
      UsbDevice d;
      d.id = usbId(device);
      // The name as the device gives it, without the " at bus-address" a
      // student has no use for.
      d.name = describe(device);
      if (const std::string at = " at " + d.id; d.name.ends_with(at))
        d.name.resize(d.name.size() - at.size());
      for (std::size_t j = 0; j < allowed.size(); ++j)
        d.allowed = d.allowed || allowed.at(j) == device;
      d.shared = spice_usb_device_manager_is_device_connected(usbManager, device) != FALSE;
      if (auto problem = usbProblems.find(d.id); problem != usbProblems.end())
        d.problem = problem->second;
      out.push_back(std::move(d));
    }
    return out;
  }

  void usbChanged() {
    if (listener.usb)
      listener.usb(usbDevices());
  }

  // One move of a device, until spice-client-glib says how it went.
  struct UsbMove {
    std::weak_ptr<int> token;
    Impl* impl = nullptr;
    std::string id;
    std::string name;
    bool share = true;
  };

  static void onUsbMoved(GObject* source, GAsyncResult* result, gpointer data) {
    std::unique_ptr<UsbMove> move(static_cast<UsbMove*>(data));
    guardCallback("a SPICE USB connect or disconnect handler", [&] {
      auto* manager = SPICE_USB_DEVICE_MANAGER(source);
      GError* error = nullptr;
      const gboolean done =
          move->share ? spice_usb_device_manager_connect_device_finish(manager, result, &error)
                      : spice_usb_device_manager_disconnect_device_finish(manager, result, &error);
      std::string reason;
      if (done == FALSE) {
        reason = error != nullptr && error->message != nullptr ? error->message : "no reason given";
        log::warn("The USB device {} could not be moved {}: {}", move->name,
                  move->share ? "to the desktop" : "back to this PC", reason);
      } else {
        log::info("The USB device {} is now {}.", move->name,
                  move->share ? "on the desktop" : "back on this PC");
      }
      g_clear_error(&error);
      if (move->token.expired())
        return;  // the session is gone
      Impl* impl = move->impl;
      if (reason.empty())
        impl->usbProblems.erase(move->id);
      else
        impl->usbProblems[move->id] = reason;
      impl->usbChanged();
    });
  }

  void shareUsb(const std::string& id, bool share) {
    if (usbManager == nullptr)
      return;
    UsbArray all{spice_usb_device_manager_get_devices(usbManager)};
    for (std::size_t i = 0; i < all.size(); ++i) {
      SpiceUsbDevice* device = all.at(i);
      if (usbId(device) != id)
        continue;
      auto move = std::make_unique<UsbMove>(UsbMove{token, this, id, describe(device), share});
      if (share) {
        spice_usb_device_manager_connect_device_async(usbManager, device, nullptr, &onUsbMoved,
                                                      move.release());
      } else {
        spice_usb_device_manager_disconnect_device_async(usbManager, device, nullptr, &onUsbMoved,
                                                         move.release());
      }
      return;
    }
    log::warn("The USB device {} to move is no longer plugged in.", id);
    usbChanged();
  }

  // Devices plugged in during the session go to the desktop as the
  // template's policy allows (usb_policy.hpp); those already plugged in
  // stay with the PC.
  void startUsb(const std::string& policy) {
    auto filter = usbRedirFilter(policy);
    if (!filter || policy == "none") {
      log::info("USB devices plugged in stay with this PC (the template's USB policy is none).");
      return;
    }
    GError* error = nullptr;
    SpiceUsbDeviceManager* manager = spice_usb_device_manager_get(session.get(), &error);
    if (manager == nullptr) {
      log::warn("USB devices cannot be handed to the desktop: {}",
                error != nullptr && error->message != nullptr ? error->message : "no reason given");
      g_clear_error(&error);
      return;
    }
    usbManager = manager;
    usbFilter = std::string(*filter);
    usbProblems.clear();
    g_object_set(manager, "auto-connect", TRUE, "auto-connect-filter", usbFilter.c_str(), nullptr);
    connections.emplace_back(manager, "device-added", reinterpret_cast<GCallback>(&onUsbAdded),
                             this);
    connections.emplace_back(manager, "device-removed", reinterpret_cast<GCallback>(&onUsbRemoved),
                             this);
    connections.emplace_back(manager, "auto-connect-failed",
                             reinterpret_cast<GCallback>(&onUsbAutoConnectFailed), this);
    log::info("USB devices plugged in now go to the desktop ({}).",
              policy == "all" ? "all of them" : "storage only");
  }

  void drawn(int x, int y, int width, int height) {
    if (!listener.drawn)
      return;
    if (auto current = frame())
      listener.drawn(*current, Rect{x, y, width, height});
  }

  void disconnect() {
    connections.clear();  // our own disconnect is not the server's
    if (session)
      spice_session_disconnect(session.get());
    inputs.reset();
    display.reset();
    main.reset();
    usbManager = nullptr;
    usbProblems.clear();
    if (audio)
      audio->stop();
    warnedAudio = false;
    token = std::make_shared<int>(0);  // moves still out find this session gone
    session.reset();
    caFile = {};
    opened = false;
  }
};

SpiceSession::SpiceSession(std::string audioDevice)
    : impl_(std::make_unique<Impl>(std::move(audioDevice))) {}

SpiceSession::~SpiceSession() {
  impl_->disconnect();
}

void SpiceSession::open(const Console& console, Listener listener) {
  Impl& impl = *impl_;
  impl.disconnect();
  impl.listener = std::move(listener);
  impl.ended = false;
  const bool tls = console.tlsPort > 0;
  impl.where = fmt::format("{}:{}", console.host, tls ? console.tlsPort : console.port);
  impl.session.reset(spice_session_new());
  ::SpiceSession* session = impl.session.get();
  const std::string port = std::to_string(tls ? console.tlsPort : console.port);
  std::string ticket(console.ticket.view());
  g_object_set(session, "host", console.host.c_str(), tls ? "tls-port" : "port", port.c_str(),
               "password", ticket.c_str(), "enable-audio", impl.audio ? TRUE : FALSE,
               "enable-usbredir", console.usb != "none" ? TRUE : FALSE, nullptr);
  wipe(ticket);
  if (tls && !console.caPem.empty()) {
    impl.caFile = file::UniqueFd(::memfd_create("aula-ca", MFD_CLOEXEC));
    if (impl.caFile.valid() &&
        file::writeAll(impl.caFile.get(), console.caPem, "the broker CA (memfd)")) {
      const std::string path = fmt::format("/proc/self/fd/{}", impl.caFile.get());
      g_object_set(session, "ca-file", path.c_str(), nullptr);
    }
  }
  if (tls && !console.hostSubject.empty()) {
    // The subject alone: the host name in the console may be an address
    // the certificate does not list.
    g_object_set(session, "cert-subject", console.hostSubject.c_str(), "verify",
                 SPICE_SESSION_VERIFY_SUBJECT, nullptr);
  }
  impl.connections.emplace_back(session, "channel-new",
                                reinterpret_cast<GCallback>(&Impl::onChannelNew), &impl);
  impl.startUsb(console.usb);
  if (!spice_session_connect(session)) {
    impl.end(SessionEnd::kFailed,
             fmt::format("spice-client-glib could not start a connection to {}.", impl.where));
  }
}

void SpiceSession::close() {
  impl_->disconnect();
}

void SpiceSession::key(std::uint32_t scancode, bool pressed) {
  if (!impl_->inputs)
    return;
  auto* inputs = SPICE_INPUTS_CHANNEL(impl_->inputs.get());
  if (pressed)
    spice_inputs_channel_key_press(inputs, scancode);
  else
    spice_inputs_channel_key_release(inputs, scancode);
}

namespace {

int spiceButton(MouseButton button) {
  switch (button) {
    case MouseButton::kLeft:
      return SPICE_MOUSE_BUTTON_LEFT;
    case MouseButton::kMiddle:
      return SPICE_MOUSE_BUTTON_MIDDLE;
    case MouseButton::kRight:
      return SPICE_MOUSE_BUTTON_RIGHT;
    case MouseButton::kSide:
      return SPICE_MOUSE_BUTTON_SIDE;
    case MouseButton::kExtra:
      return SPICE_MOUSE_BUTTON_EXTRA;
  }
  return SPICE_MOUSE_BUTTON_INVALID;
}

}  // namespace

void SpiceSession::mouse(const Mouse& mouse, std::uint32_t buttons) {
  Impl& impl = *impl_;
  if (!impl.inputs)
    return;
  auto* inputs = SPICE_INPUTS_CHANNEL(impl.inputs.get());
  const auto held = static_cast<gint>(buttons);
  if (mouse.button) {
    if (mouse.pressed)
      spice_inputs_channel_button_press(inputs, spiceButton(*mouse.button), held);
    else
      spice_inputs_channel_button_release(inputs, spiceButton(*mouse.button), held);
    return;
  }
  if (mouse.wheel != 0) {
    // A notch is a press and release of the wheel's own button.
    const int button = mouse.wheel > 0 ? SPICE_MOUSE_BUTTON_DOWN : SPICE_MOUSE_BUTTON_UP;
    const gint mask = mouse.wheel > 0 ? SPICE_MOUSE_BUTTON_MASK_DOWN : SPICE_MOUSE_BUTTON_MASK_UP;
    for (int i = 0; i < std::min(std::abs(mouse.wheel), 10); ++i) {
      spice_inputs_channel_button_press(inputs, button, held | mask);
      spice_inputs_channel_button_release(inputs, button, held);
    }
    return;
  }
  int mode = SPICE_MOUSE_MODE_SERVER;
  if (impl.main)
    g_object_get(impl.main.get(), "mouse-mode", &mode, nullptr);
  if (mode == SPICE_MOUSE_MODE_CLIENT)
    spice_inputs_channel_position(inputs, mouse.x, mouse.y, 0, held);
  else if (mouse.dx != 0 || mouse.dy != 0)
    spice_inputs_channel_motion(inputs, mouse.dx, mouse.dy, held);
}

void SpiceSession::ctrlAltDel() {
  for (std::uint32_t code : {kCtrl, kAlt, kDelete})
    key(code, true);
  for (std::uint32_t code : {kDelete, kAlt, kCtrl})
    key(code, false);
}

std::vector<UsbDevice> SpiceSession::usbDevices() {
  return impl_->usbDevices();
}

void SpiceSession::shareUsb(const std::string& id, bool share) {
  impl_->shareUsb(id, share);
}

std::optional<Frame> SpiceSession::frame() {
  return impl_->frame();
}

}  // namespace aula::greeter
