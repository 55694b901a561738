// KMS through libdrm's dumb buffers, and the fbdev fallback. libdrm's
// objects are freed by RAII wrappers right where they are read.
#include "kms_output.hpp"

#include <algorithm>
#include <cstring>

#include <errno.h>
#include <linux/fb.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <xf86drm.h>
#include <xf86drmMode.h>

#include "aula/common/log.hpp"

namespace aula::greeter {

namespace {

struct ResourcesFree {
  void operator()(drmModeRes* p) const { drmModeFreeResources(p); }
};
struct ConnectorFree {
  void operator()(drmModeConnector* p) const { drmModeFreeConnector(p); }
};
struct EncoderFree {
  void operator()(drmModeEncoder* p) const { drmModeFreeEncoder(p); }
};
struct CrtcFree {
  void operator()(drmModeCrtc* p) const { drmModeFreeCrtc(p); }
};
using Resources = std::unique_ptr<drmModeRes, ResourcesFree>;
using Connector = std::unique_ptr<drmModeConnector, ConnectorFree>;
using Encoder = std::unique_ptr<drmModeEncoder, EncoderFree>;
using Crtc = std::unique_ptr<drmModeCrtc, CrtcFree>;

// Copies the damaged rectangles (all of it when there are none) from the
// shadow to the scanout memory.
void copyDamage(const std::vector<std::uint32_t>& shadow, int width, int height,
                std::uint8_t* scanout, int pitch, std::span<const Rect> damage) {
  const Rect whole{0, 0, width, height};
  const std::span<const Rect> rects = damage.empty() ? std::span<const Rect>(&whole, 1) : damage;
  for (const Rect& r : rects) {
    const int x0 = std::clamp(r.x, 0, width);
    const int x1 = std::clamp(r.x + r.width, 0, width);
    const int y0 = std::clamp(r.y, 0, height);
    const int y1 = std::clamp(r.y + r.height, 0, height);
    if (x1 <= x0)
      continue;
    for (int y = y0; y < y1; ++y) {
      std::memcpy(
          scanout + static_cast<std::ptrdiff_t>(y) * pitch + static_cast<std::ptrdiff_t>(x0) * 4,
          shadow.data() + static_cast<std::ptrdiff_t>(y) * width + x0,
          static_cast<std::size_t>(x1 - x0) * 4);
    }
  }
}

}  // namespace

struct KmsOutput::Head {
  std::uint32_t connector = 0;
  std::uint32_t crtc = 0;
  drmModeModeInfo mode{};
  std::uint32_t handle = 0;
  std::uint32_t framebuffer = 0;
  std::uint32_t pitch = 0;
  std::uint64_t size = 0;
  std::uint8_t* map = nullptr;
  std::vector<std::uint32_t> shadow;
  drmModeCrtc* saved = nullptr;  // the mode before ours, restored at the end
};

KmsOutput::KmsOutput(int fd, std::string device) : fd_(fd), device_(std::move(device)) {}

KmsOutput::~KmsOutput() {
  for (auto& head : heads_) {
    if (head->saved != nullptr) {
      drmModeSetCrtc(fd_, head->saved->crtc_id, head->saved->buffer_id, head->saved->x,
                     head->saved->y, &head->connector, 1, &head->saved->mode);
      drmModeFreeCrtc(head->saved);
    }
    if (head->map != nullptr)
      munmap(head->map, head->size);
    if (head->framebuffer != 0)
      drmModeRmFB(fd_, head->framebuffer);
    if (head->handle != 0) {
      drm_mode_destroy_dumb destroy{};
      destroy.handle = head->handle;
      drmIoctl(fd_, DRM_IOCTL_MODE_DESTROY_DUMB, &destroy);
    }
  }
}

Result<std::unique_ptr<KmsOutput>> KmsOutput::open(int drmFd, std::string device) {
  std::unique_ptr<KmsOutput> output(new KmsOutput(drmFd, std::move(device)));
  const std::string& name = output->device_;
  std::uint64_t dumb = 0;
  if (drmGetCap(drmFd, DRM_CAP_DUMB_BUFFER, &dumb) != 0 || dumb == 0)
    return makeError(Errc::kIo, "The display device {} offers no dumb buffers.", name);
  Resources resources(drmModeGetResources(drmFd));
  if (!resources)
    return makeError(Errc::kIo, "{} is not a KMS device: {}.", name, std::strerror(errno));
  std::vector<std::uint32_t> usedCrtcs;
  for (int i = 0; i < resources->count_connectors; ++i) {
    Connector connector(drmModeGetConnector(drmFd, resources->connectors[i]));
    if (!connector || connector->connection != DRM_MODE_CONNECTED || connector->count_modes == 0)
      continue;
    auto head = std::make_unique<Head>();
    head->connector = connector->connector_id;
    head->mode = connector->modes[0];
    for (int m = 0; m < connector->count_modes; ++m) {
      if ((connector->modes[m].type & DRM_MODE_TYPE_PREFERRED) != 0) {
        head->mode = connector->modes[m];
        break;
      }
    }
    // A CRTC: the encoder's current one, else any the encoders allow that
    // no other head took.
    for (int e = 0; e < connector->count_encoders && head->crtc == 0; ++e) {
      Encoder encoder(drmModeGetEncoder(drmFd, connector->encoders[e]));
      if (!encoder)
        continue;
      if (encoder->crtc_id != 0 &&
          std::find(usedCrtcs.begin(), usedCrtcs.end(), encoder->crtc_id) == usedCrtcs.end()) {
        head->crtc = encoder->crtc_id;
        break;
      }
      for (int c = 0; c < resources->count_crtcs; ++c) {
        const std::uint32_t crtc = resources->crtcs[c];
        if ((encoder->possible_crtcs & (1u << c)) != 0 &&
            std::find(usedCrtcs.begin(), usedCrtcs.end(), crtc) == usedCrtcs.end()) {
          head->crtc = crtc;
          break;
        }
      }
    }
    if (head->crtc == 0) {
      log::warn("{}: connector {} has no free CRTC; it stays dark.", name, head->connector);
      continue;
    }
    usedCrtcs.push_back(head->crtc);

    drm_mode_create_dumb create{};
    create.width = head->mode.hdisplay;
    create.height = head->mode.vdisplay;
    create.bpp = 32;
    if (drmIoctl(drmFd, DRM_IOCTL_MODE_CREATE_DUMB, &create) != 0)
      return makeError(Errc::kIo, "{}: cannot make a {}x{} buffer: {}.", name, create.width,
                       create.height, std::strerror(errno));
    head->handle = create.handle;
    head->pitch = create.pitch;
    head->size = create.size;
    if (drmModeAddFB(drmFd, create.width, create.height, 24, 32, create.pitch, create.handle,
                     &head->framebuffer) != 0)
      return makeError(Errc::kIo, "{}: cannot add a framebuffer: {}.", name, std::strerror(errno));
    drm_mode_map_dumb map{};
    map.handle = create.handle;
    if (drmIoctl(drmFd, DRM_IOCTL_MODE_MAP_DUMB, &map) != 0)
      return makeError(Errc::kIo, "{}: cannot map a buffer: {}.", name, std::strerror(errno));
    void* pixels = mmap(nullptr, create.size, PROT_READ | PROT_WRITE, MAP_SHARED, drmFd,
                        static_cast<off_t>(map.offset));
    if (pixels == MAP_FAILED)
      return makeError(Errc::kIo, "{}: cannot map a buffer: {}.", name, std::strerror(errno));
    head->map = static_cast<std::uint8_t*>(pixels);
    std::memset(head->map, 0, create.size);
    head->shadow.assign(static_cast<std::size_t>(create.width) * create.height, 0);
    head->saved = drmModeGetCrtc(drmFd, head->crtc);
    if (drmModeSetCrtc(drmFd, head->crtc, head->framebuffer, 0, 0, &head->connector, 1,
                       &head->mode) != 0)
      return makeError(Errc::kIo, "{}: cannot set the mode {}x{} on connector {}: {}.", name,
                       create.width, create.height, head->connector, std::strerror(errno));
    log::info("{}: connector {} shows {}x{}@{}.", name, head->connector, create.width,
              create.height, head->mode.vrefresh);
    output->heads_.push_back(std::move(head));
  }
  if (output->heads_.empty())
    return makeError(Errc::kIo, "{} has no connected screen.", name);
  return output;
}

int KmsOutput::heads() const {
  return static_cast<int>(heads_.size());
}

Canvas KmsOutput::canvas(int head) {
  Head& h = *heads_.at(static_cast<std::size_t>(head));
  return {h.shadow.data(), h.mode.hdisplay, h.mode.vdisplay, h.mode.hdisplay * 4};
}

Status KmsOutput::present(int head, std::span<const Rect> damage) {
  Head& h = *heads_.at(static_cast<std::size_t>(head));
  copyDamage(h.shadow, h.mode.hdisplay, h.mode.vdisplay, h.map, static_cast<int>(h.pitch), damage);
  // Virtual GPUs (bochs, virtio, qxl) show a dumb buffer's changes only
  // when told; real ones scan it out anyway and ignore this.
  std::vector<drmModeClip> clips;
  for (const Rect& r : damage) {
    clips.push_back({static_cast<unsigned short>(std::max(r.x, 0)),
                     static_cast<unsigned short>(std::max(r.y, 0)),
                     static_cast<unsigned short>(std::clamp(r.x + r.width, 0, 65535)),
                     static_cast<unsigned short>(std::clamp(r.y + r.height, 0, 65535))});
  }
  const int dirty = drmModeDirtyFB(fd_, h.framebuffer, clips.empty() ? nullptr : clips.data(),
                                   static_cast<std::uint32_t>(clips.size()));
  if (dirty != 0 && dirty != -ENOSYS && errno != ENOSYS)
    return makeError(Errc::kIo, "{}: showing a frame failed: {}.", device_, std::strerror(errno));
  return okStatus();
}

Result<std::unique_ptr<FbdevOutput>> FbdevOutput::open(file::UniqueFd fd, std::string device) {
  std::unique_ptr<FbdevOutput> output(new FbdevOutput());
  fb_var_screeninfo var{};
  fb_fix_screeninfo fix{};
  if (ioctl(fd.get(), FBIOGET_VSCREENINFO, &var) != 0 ||
      ioctl(fd.get(), FBIOGET_FSCREENINFO, &fix) != 0)
    return makeError(Errc::kIo, "{} is not a framebuffer: {}.", device, std::strerror(errno));
  if (var.bits_per_pixel != 32)
    return makeError(Errc::kIo, "{} has {} bits per pixel; the greeter draws 32.", device,
                     var.bits_per_pixel);
  output->width_ = static_cast<int>(var.xres);
  output->height_ = static_cast<int>(var.yres);
  output->lineLength_ = static_cast<int>(fix.line_length);
  output->mapSize_ = static_cast<std::size_t>(fix.line_length) * var.yres_virtual;
  void* map = mmap(nullptr, output->mapSize_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED)
    return makeError(Errc::kIo, "Cannot map {}: {}.", device, std::strerror(errno));
  output->map_ = static_cast<std::uint8_t*>(map);
  output->shadow_.assign(static_cast<std::size_t>(output->width_) * output->height_, 0);
  output->fd_ = std::move(fd);
  output->device_ = std::move(device);
  return output;
}

FbdevOutput::~FbdevOutput() {
  if (map_ != nullptr)
    munmap(map_, mapSize_);
}

Canvas FbdevOutput::canvas(int) {
  return {shadow_.data(), width_, height_, width_ * 4};
}

Status FbdevOutput::present(int, std::span<const Rect> damage) {
  copyDamage(shadow_, width_, height_, map_, lineLength_, damage);
  return okStatus();
}

}  // namespace aula::greeter
