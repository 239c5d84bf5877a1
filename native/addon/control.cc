// Wrappers for the ioctls of dm-ferry's control device (/dev/ferry-ctl).
//
// Every call runs on a libuv worker thread (Napi::AsyncWorker) and returns a
// Promise: the event loop never waits for the kernel. Failures reject with
// the addon's errno-shaped errors (.code = 'EINVAL', .errno, .syscall). The
// argument and result layouts are the shared ABI in native/common/ferry_abi.h
// and the numbers in native/linux/ferry_ioctl.h (only the Linux uapi
// <linux/ioctl.h> is needed, no kernel headers).
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "ctl_values.h"
#include "errors.h"
#include "ferry_abi.h"
#include "ferry_ioctl.h"

namespace ferry {

namespace {

// Runs exec() on a worker thread; exec returns 0 or an errno and may name the
// failing syscall. result() builds the resolution value on the JS thread;
// decorate() may add properties to the rejection error.
class CtlWorker : public Napi::AsyncWorker {
 public:
  using Exec = std::function<int(const char** syscall)>;
  using Result = std::function<Napi::Value(Napi::Env)>;
  using Decorate = std::function<void(Napi::Env, Napi::Error&)>;

  CtlWorker(Napi::Env env, std::string label, Exec exec, Result result,
            Decorate decorate = nullptr)
      : Napi::AsyncWorker(env, "ferry:control"),
        deferred_(Napi::Promise::Deferred::New(env)),
        label_(std::move(label)),
        exec_(std::move(exec)),
        result_(std::move(result)),
        decorate_(std::move(decorate)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  // Keeps a JS object (a Buffer being filled) alive until the call ends.
  void Keep(Napi::Object object) { kept_.push_back(Napi::Persistent(object)); }

 protected:
  void Execute() override {
    const char* syscall = "ioctl";
    int err = exec_(&syscall);
    if (err != 0) {
      errno_ = err;
      syscall_ = syscall;
      SetError(label_);
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Value value = result_(env);
    if (env.IsExceptionPending()) {
      deferred_.Reject(env.GetAndClearPendingException().Value());
      return;
    }
    deferred_.Resolve(value);
  }

  void OnError(const Napi::Error&) override {
    Napi::Error error = ErrnoError(Env(), errno_, syscall_, label_);
    if (decorate_) decorate_(Env(), error);
    deferred_.Reject(error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string label_;
  Exec exec_;
  Result result_;
  Decorate decorate_;
  std::vector<Napi::ObjectReference> kept_;
  int errno_ = 0;
  const char* syscall_ = "ioctl";
};

Napi::Value Queue(CtlWorker* worker) {
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself after OnOK/OnError
  return promise;
}

// ioctl(2), retried on EINTR; returns 0 or errno.
int Ioctl(int fd, unsigned long request, void* arg) {
  for (;;) {
    if (ioctl(fd, request, arg) == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// ---- exported functions ----

Napi::Value CtlOpen(const Napi::CallbackInfo& info) {
  std::string path;
  if (!ReadPath(info, 0, "path", &path)) return info.Env().Undefined();
  auto fd = std::make_shared<int>(-1);
  auto* w = new CtlWorker(
      info.Env(), "open(" + path + ")",
      [path, fd](const char** syscall) {
        *syscall = "open";
        *fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
        return *fd < 0 ? errno : 0;
      },
      [fd](Napi::Env env) { return Napi::Number::New(env, *fd); });
  return Queue(w);
}

Napi::Value CtlClose(const Napi::CallbackInfo& info) {
  int fd;
  if (!ReadFd(info, 0, "fd", &fd)) return info.Env().Undefined();
  auto* w = new CtlWorker(
      info.Env(), "close(ferry control fd)",
      [fd](const char** syscall) {
        *syscall = "close";
        // Linux releases the fd even when close() reports EINTR.
        return close(fd) == 0 || errno == EINTR ? 0 : errno;
      },
      [](Napi::Env env) { return env.Undefined(); });
  return Queue(w);
}

Napi::Value CtlVersion(const Napi::CallbackInfo& info) {
  int fd;
  if (!ReadFd(info, 0, "fd", &fd)) return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_version>();
  InitArg(arg.get());
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_VERSION)",
      [fd, arg](const char**) { return Ioctl(fd, FERRY_IOC_VERSION, arg.get()); },
      [arg](Napi::Env env) { return VersionObject(env, *arg); });
  return Queue(w);
}

Napi::Value CtlList(const Napi::CallbackInfo& info) {
  int fd;
  if (!ReadFd(info, 0, "fd", &fd)) return info.Env().Undefined();
  auto entries = std::make_shared<std::vector<ferry_dev_info>>(FERRY_MAX_DEVICES);
  auto arg = std::make_shared<ferry_ioc_list>();
  InitArg(arg.get());
  arg->entries = reinterpret_cast<uintptr_t>(entries->data());
  arg->capacity = FERRY_MAX_DEVICES;
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_LIST)",
      [fd, arg](const char**) { return Ioctl(fd, FERRY_IOC_LIST, arg.get()); },
      [arg, entries](Napi::Env env) {
        Napi::Array out = Napi::Array::New(env, arg->returned);
        for (uint32_t i = 0; i < arg->returned; i++)
          out.Set(i, DevInfoObject(env, (*entries)[i]));
        return out;
      });
  return Queue(w);
}

Napi::Value CtlGetChanges(const Napi::CallbackInfo& info) {
  int fd;
  Napi::Buffer<uint8_t> buf;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadBuffer(info, 1, "buffer", &buf))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_get>();
  InitArg(arg.get());
  arg->buf = reinterpret_cast<uintptr_t>(buf.Data());
  arg->buf_len = buf.Length();
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_GET_CHANGES)",
      [fd, arg](const char**) {
        return Ioctl(fd, FERRY_IOC_GET_CHANGES, arg.get());
      },
      [arg](Napi::Env env) { return GetChangesObject(env, *arg); },
      [arg](Napi::Env, Napi::Error& error) {
        if (arg->needed) error.Set("needed", Num(arg->needed));
      });
  w->Keep(buf);
  return Queue(w);
}

Napi::Value CtlCommit(const Napi::CallbackInfo& info) {
  int fd;
  uint64_t batch_id;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadU64(info, 1, "batchId", &batch_id))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_commit>();
  InitArg(arg.get());
  arg->batch_id = batch_id;
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_COMMIT)",
      [fd, arg](const char**) { return Ioctl(fd, FERRY_IOC_COMMIT, arg.get()); },
      [](Napi::Env env) { return env.Undefined(); });
  return Queue(w);
}

Napi::Value CtlWait(const Napi::CallbackInfo& info) {
  int fd;
  uint32_t timeout_ms;
  if (!ReadFd(info, 0, "fd", &fd) ||
      !ReadU32(info, 1, "timeoutMs", &timeout_ms))
    return info.Env().Undefined();
  if (timeout_ms > INT_MAX) {
    ThrowRangeError(info.Env(), "The \"timeoutMs\" argument is too large");
    return info.Env().Undefined();
  }
  auto ready = std::make_shared<bool>(false);
  auto* w = new CtlWorker(
      info.Env(), "poll(ferry control fd)",
      [fd, timeout_ms, ready](const char** syscall) {
        *syscall = "poll";
        struct pollfd p = {fd, POLLIN, 0};
        int n;
        do {
          n = poll(&p, 1, static_cast<int>(timeout_ms));
        } while (n < 0 && errno == EINTR);
        if (n < 0) return errno;
        if (n > 0 && (p.revents & (POLLERR | POLLNVAL))) return EBADF;
        *ready = n > 0 && (p.revents & POLLIN);
        return 0;
      },
      [ready](Napi::Env env) { return Napi::Boolean::New(env, *ready); });
  return Queue(w);
}

Napi::Value CtlTag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  auto arg = std::make_shared<ferry_ioc_tag>();
  InitArg(arg.get());
  if (!ReadFd(info, 0, "fd", &fd) || !ReadTagArgs(info, 1, arg.get()))
    return env.Undefined();
  auto* w = new CtlWorker(
      env, "ioctl(FERRY_IOC_TAG)",
      [fd, arg](const char**) { return Ioctl(fd, FERRY_IOC_TAG, arg.get()); },
      [arg](Napi::Env e) { return TagObject(e, *arg); },
      [arg](Napi::Env, Napi::Error& error) {
        error.Set("holdNs", Num(arg->hold_ns));
      });
  return Queue(w);
}

Napi::Value CtlHold(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  auto arg = std::make_shared<ferry_ioc_hold>();
  InitArg(arg.get());
  if (!ReadFd(info, 0, "fd", &fd) || !ReadHoldArgs(info, 1, arg.get()))
    return env.Undefined();
  auto* w = new CtlWorker(
      env, "ioctl(FERRY_IOC_HOLD)",
      [fd, arg](const char**) { return Ioctl(fd, FERRY_IOC_HOLD, arg.get()); },
      [arg](Napi::Env e) { return HoldObject(e, *arg); },
      [arg](Napi::Env, Napi::Error& error) {
        error.Set("drainNs", Num(arg->drain_ns));
      });
  return Queue(w);
}

Napi::Value CtlRelease(const Napi::CallbackInfo& info) {
  int fd;
  uint64_t hold_id;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadU64(info, 1, "holdId", &hold_id))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_release>();
  InitArg(arg.get());
  arg->hold_id = hold_id;
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_RELEASE)",
      [fd, arg](const char**) { return Ioctl(fd, FERRY_IOC_RELEASE, arg.get()); },
      [arg](Napi::Env env) { return ReleaseObject(env, *arg); });
  return Queue(w);
}

Napi::Value CtlStats(const Napi::CallbackInfo& info) {
  int fd;
  uint32_t dev = FERRY_DEV_NONE;
  if (!ReadFd(info, 0, "fd", &fd)) return info.Env().Undefined();
  if (!info[1].IsUndefined() && !info[1].IsNull() &&
      !ReadU32(info, 1, "devIndex", &dev))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_stats>();
  InitArg(arg.get());
  arg->dev_index = dev;
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_STATS)",
      [fd, arg](const char**) { return Ioctl(fd, FERRY_IOC_STATS, arg.get()); },
      [arg](Napi::Env env) { return StatsObject(env, *arg); });
  return Queue(w);
}

Napi::Value CtlGetBitmap(const Napi::CallbackInfo& info) {
  int fd;
  uint32_t dev;
  Napi::Buffer<uint8_t> buf;
  uint64_t start;
  bool cut;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadU32(info, 1, "devIndex", &dev) ||
      !ReadBuffer(info, 2, "buffer", &buf) ||
      !ReadU64(info, 3, "startByte", &start) || !ReadBool(info, 4, "cut", &cut))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_bitmap>();
  InitArg(arg.get());
  arg->dev_index = dev;
  arg->flags = cut ? FERRY_BITMAP_F_CUT : 0;
  arg->buf = reinterpret_cast<uintptr_t>(buf.Data());
  arg->buf_len = buf.Length() > UINT32_MAX ? UINT32_MAX
                                           : static_cast<uint32_t>(buf.Length());
  arg->start_byte = start;
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_GET_BITMAP)",
      [fd, arg](const char**) {
        return Ioctl(fd, FERRY_IOC_GET_BITMAP, arg.get());
      },
      [arg](Napi::Env env) { return BitmapObject(env, *arg); });
  w->Keep(buf);
  return Queue(w);
}

Napi::Value CtlClearBitmap(const Napi::CallbackInfo& info) {
  int fd;
  uint32_t dev;
  uint64_t epoch, start_bit, nbits;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadU32(info, 1, "devIndex", &dev) ||
      !ReadU64(info, 2, "epoch", &epoch) ||
      !ReadU64(info, 3, "startBit", &start_bit) ||
      !ReadU64(info, 4, "nbits", &nbits))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_clear_bitmap>();
  InitArg(arg.get());
  arg->dev_index = dev;
  arg->epoch = epoch;
  arg->start_bit = start_bit;
  arg->nbits = nbits;
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_CLEAR_BITMAP)",
      [fd, arg](const char**) {
        return Ioctl(fd, FERRY_IOC_CLEAR_BITMAP, arg.get());
      },
      [arg](Napi::Env env) { return Napi::Number::New(env, Num(arg->dirty_bits)); });
  return Queue(w);
}

Napi::Value CtlResyncMark(const Napi::CallbackInfo& info) {
  int fd;
  uint32_t dev, length;
  uint64_t offset;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadU32(info, 1, "devIndex", &dev) ||
      !ReadU64(info, 2, "offset", &offset) ||
      !ReadU32(info, 3, "length", &length))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_resync>();
  InitArg(arg.get());
  arg->dev_index = dev;
  arg->offset = offset;
  arg->length = length;
  auto* w = new CtlWorker(
      info.Env(), "ioctl(FERRY_IOC_RESYNC_MARK)",
      [fd, arg](const char**) {
        return Ioctl(fd, FERRY_IOC_RESYNC_MARK, arg.get());
      },
      [arg](Napi::Env env) { return Napi::Number::New(env, Num(arg->seq)); });
  return Queue(w);
}

// Diagnostics and tests: any ioctl of the ferry family on a caller-built
// argument buffer (which the kernel may update in place).
Napi::Value CtlIoctlRaw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint32_t request;
  Napi::Buffer<uint8_t> buf;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadU32(info, 1, "request", &request) ||
      !ReadBuffer(info, 2, "buffer", &buf))
    return env.Undefined();
  if (_IOC_TYPE(request) != FERRY_IOC_MAGIC) {
    ThrowRangeError(env, "ctlIoctlRaw: request is not a ferry ioctl");
    return env.Undefined();
  }
  if (_IOC_SIZE(request) > buf.Length()) {
    ThrowRangeError(env, "ctlIoctlRaw: buffer is smaller than the request's size");
    return env.Undefined();
  }
  uint8_t* data = buf.Data();
  auto* w = new CtlWorker(
      env, "ioctl(ferry " + std::to_string(_IOC_NR(request)) + ")",
      [fd, request, data](const char**) { return Ioctl(fd, request, data); },
      [](Napi::Env e) { return Napi::Number::New(e, 0); });
  w->Keep(buf);
  return Queue(w);
}

}  // namespace

void RegisterControl(Napi::Env env, Napi::Object exports) {
  exports.Set("ctlOpen", Napi::Function::New(env, CtlOpen, "ctlOpen"));
  exports.Set("ctlClose", Napi::Function::New(env, CtlClose, "ctlClose"));
  exports.Set("ctlVersion", Napi::Function::New(env, CtlVersion, "ctlVersion"));
  exports.Set("ctlList", Napi::Function::New(env, CtlList, "ctlList"));
  exports.Set("ctlGetChanges",
              Napi::Function::New(env, CtlGetChanges, "ctlGetChanges"));
  exports.Set("ctlCommit", Napi::Function::New(env, CtlCommit, "ctlCommit"));
  exports.Set("ctlWait", Napi::Function::New(env, CtlWait, "ctlWait"));
  exports.Set("ctlTag", Napi::Function::New(env, CtlTag, "ctlTag"));
  exports.Set("ctlHold", Napi::Function::New(env, CtlHold, "ctlHold"));
  exports.Set("ctlRelease", Napi::Function::New(env, CtlRelease, "ctlRelease"));
  exports.Set("ctlStats", Napi::Function::New(env, CtlStats, "ctlStats"));
  exports.Set("ctlGetBitmap",
              Napi::Function::New(env, CtlGetBitmap, "ctlGetBitmap"));
  exports.Set("ctlClearBitmap",
              Napi::Function::New(env, CtlClearBitmap, "ctlClearBitmap"));
  exports.Set("ctlResyncMark",
              Napi::Function::New(env, CtlResyncMark, "ctlResyncMark"));
  exports.Set("ctlIoctlRaw", Napi::Function::New(env, CtlIoctlRaw, "ctlIoctlRaw"));
  Napi::Object constants = Napi::Object::New(env);
  constants.Set("FERRY_IOC_VERSION", static_cast<double>(FERRY_IOC_VERSION));
  constants.Set("FERRY_IOC_LIST", static_cast<double>(FERRY_IOC_LIST));
  constants.Set("FERRY_IOC_GET_CHANGES", static_cast<double>(FERRY_IOC_GET_CHANGES));
  constants.Set("FERRY_IOC_COMMIT", static_cast<double>(FERRY_IOC_COMMIT));
  constants.Set("FERRY_IOC_TAG", static_cast<double>(FERRY_IOC_TAG));
  constants.Set("FERRY_IOC_STATS", static_cast<double>(FERRY_IOC_STATS));
  constants.Set("FERRY_IOC_GET_BITMAP", static_cast<double>(FERRY_IOC_GET_BITMAP));
  constants.Set("FERRY_IOC_CLEAR_BITMAP", static_cast<double>(FERRY_IOC_CLEAR_BITMAP));
  constants.Set("FERRY_IOC_RESYNC_MARK", static_cast<double>(FERRY_IOC_RESYNC_MARK));
  constants.Set("FERRY_IOC_STATS_V0", static_cast<double>(FERRY_IOC_STATS_V0));
  constants.Set("FERRY_IOC_HOLD", static_cast<double>(FERRY_IOC_HOLD));
  constants.Set("FERRY_IOC_RELEASE", static_cast<double>(FERRY_IOC_RELEASE));
  constants.Set("FERRY_ABI_VERSION", FERRY_ABI_VERSION);
  constants.Set("sizeofBatchHeader", static_cast<double>(sizeof(ferry_batch_hdr)));
  constants.Set("sizeofRecord", static_cast<double>(sizeof(ferry_rec)));
  constants.Set("sizeofDevInfo", static_cast<double>(sizeof(ferry_dev_info)));
  exports.Set("ctlConstants", constants);
}

}  // namespace ferry
