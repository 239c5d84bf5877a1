// Filesystem freeze/thaw (FIFREEZE/FITHAW) for crash-consistent snapshots.
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <string>

#include "args.h"
#include "errors.h"
#include "register.h"
#include "scoped_fd.h"

namespace ferry {

namespace {

// FIFREEZE freezes whatever filesystem contains the path, so a mistyped
// subdirectory of "/" would freeze the root filesystem. Refuse anything that
// is not a mount root when the kernel (>= 5.8) can tell us.
bool IsMountRootOrUnknown(int fd) {
  struct statx stx;
  if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) != 0) return true;
  if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) == 0) return true;
  return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

Napi::Value FreezeOrThaw(const Napi::CallbackInfo& info, bool freeze) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ReadPath(info, 0, "mountPath", &path)) return env.Undefined();
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    ThrowErrno(env, errno, "open", "open(" + path + ")");
    return env.Undefined();
  }
  // Thaw stays permissive: it is the recovery path and harmless if misused.
  if (freeze && !IsMountRootOrUnknown(fd.get())) {
    CodeError(env, "EINVAL", EINVAL,
              "freezeFs: " + path + " is not a mount point")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  unsigned long request = freeze ? FIFREEZE : FITHAW;
  if (ioctl(fd.get(), request, 0) != 0) {
    ThrowErrno(env, errno, "ioctl",
               freeze ? "ioctl(FIFREEZE)" : "ioctl(FITHAW)");
  }
  return env.Undefined();
}

Napi::Value FreezeFs(const Napi::CallbackInfo& info) {
  return FreezeOrThaw(info, true);
}

Napi::Value ThawFs(const Napi::CallbackInfo& info) {
  return FreezeOrThaw(info, false);
}

}  // namespace

void RegisterFsFreeze(Napi::Env env, Napi::Object exports) {
  exports.Set("freezeFs", Napi::Function::New(env, FreezeFs, "freezeFs"));
  exports.Set("thawFs", Napi::Function::New(env, ThawFs, "thawFs"));
}

}  // namespace ferry
