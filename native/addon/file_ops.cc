// Sparse-file, reflink and cache primitives: punchHole, seekData, seekHole,
// cloneFile, allocate, dropCache.
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "args.h"
#include "errors.h"
#include "register.h"

namespace ferry {

namespace {

// fallocate(fd, mode, offset, length) with the arguments of info; a zero length is a no-op
// (fallocate itself rejects it with EINVAL).
Napi::Value Fallocate(const Napi::CallbackInfo& info, int mode, const char* label) {
  Napi::Env env = info.Env();
  int fd;
  int64_t offset, length;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadOffset(info, 1, "offset", &offset) ||
      !ReadOffset(info, 2, "length", &length)) {
    return env.Undefined();
  }
  if (length == 0) return env.Undefined();
  if (fallocate(fd, mode, offset, length) != 0) {
    ThrowErrno(env, errno, "fallocate", label);
  }
  return env.Undefined();
}

Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  return Fallocate(info, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   "fallocate(PUNCH_HOLE)");
}

Napi::Value Seek(const Napi::CallbackInfo& info, int whence,
                 const char* label) {
  Napi::Env env = info.Env();
  int fd;
  int64_t offset;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadOffset(info, 1, "offset", &offset)) {
    return env.Undefined();
  }
  off_t result = lseek(fd, offset, whence);
  if (result < 0) {
    // ENXIO: offset is at/after EOF, or (SEEK_DATA) no data follows it.
    if (errno == ENXIO) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "lseek", label);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(result));
}

Napi::Value SeekData(const Napi::CallbackInfo& info) {
  return Seek(info, SEEK_DATA, "lseek(SEEK_DATA)");
}

Napi::Value SeekHole(const Napi::CallbackInfo& info) {
  return Seek(info, SEEK_HOLE, "lseek(SEEK_HOLE)");
}

Napi::Value CloneFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int src, dst;
  if (!ReadFd(info, 0, "srcFd", &src) || !ReadFd(info, 1, "dstFd", &dst)) {
    return env.Undefined();
  }
  if (ioctl(dst, FICLONE, src) != 0) {
    ThrowErrno(env, errno, "ioctl", "ioctl(FICLONE)");
  }
  return env.Undefined();
}

Napi::Value Allocate(const Napi::CallbackInfo& info) {
  return Fallocate(info, 0, "fallocate");
}

// Drops the file's clean cached pages, so that the next read comes from the
// disk: after a failed fsync the page cache may hold data the disk does not.
Napi::Value DropCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ReadFd(info, 0, "fd", &fd)) return env.Undefined();
  int err = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  if (err != 0) ThrowErrno(env, err, "posix_fadvise", "posix_fadvise(DONTNEED)");
  return env.Undefined();
}

}  // namespace

void RegisterFileOps(Napi::Env env, Napi::Object exports) {
  exports.Set("punchHole", Napi::Function::New(env, PunchHole, "punchHole"));
  exports.Set("seekData", Napi::Function::New(env, SeekData, "seekData"));
  exports.Set("seekHole", Napi::Function::New(env, SeekHole, "seekHole"));
  exports.Set("cloneFile", Napi::Function::New(env, CloneFile, "cloneFile"));
  exports.Set("allocate", Napi::Function::New(env, Allocate, "allocate"));
  exports.Set("dropCache", Napi::Function::New(env, DropCache, "dropCache"));
}

}  // namespace ferry
