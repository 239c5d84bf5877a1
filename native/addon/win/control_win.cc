// The ctl* functions on Windows: ferryflt's control device \\.\FerryCtl.
//
// Same names, arguments and results as control.cc on Linux, so
// FerryControl (index.ts) works unchanged.  Every call is an overlapped
// DeviceIoControl on a worker thread and returns a Promise; the event loop
// never waits for the driver.  The IOCTLs and their buffer layouts are in
// native/windows/ferry_winioctl.h and native/windows/README.md.
//
// Differences from Linux, hidden here where possible:
//  - "fd" is the HANDLE's value.
//  - GET_CHANGES and GET_BITMAP return their result struct in the last
//    bytes of the output buffer (the batch / bitmap starts at offset 0, as
//    in the Linux Buffer), so the usable space is the Buffer's length minus
//    that struct; EMSGSIZE's .needed includes it.
//  - ctlWait pends a WAIT request and cancels it at the timeout.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "ctl_values.h"
#include "errors.h"
#include "ferry_winioctl.h"
#include "register_win.h"
#include "win_io.h"

namespace ferry {

namespace {

bool ReadHandle(const Napi::CallbackInfo& info, size_t index, HANDLE* out) {
  int fd;
  if (!ReadFd(info, index, "fd", &fd)) return false;
  *out = NumberHandle(fd);
  return true;
}

// A Buffer used as METHOD_OUT_DIRECT output: room for data plus trailer.
bool CheckOutBuffer(Napi::Env env, const Napi::Buffer<uint8_t>& buf, size_t trailer) {
  if (buf.Length() <= trailer || buf.Length() > 0xffffffffULL) {
    ThrowRangeError(env, "The \"buffer\" argument must be longer than " + std::to_string(trailer) +
                             " bytes and shorter than 4 GiB on Windows");
    return false;
  }
  return true;
}

// One METHOD_BUFFERED call whose argument struct is both input and output.
template <typename T>
DWORD BufferedCall(HANDLE h, DWORD code, T* arg) {
  return Ioctl(h, code, arg, sizeof(T), arg, sizeof(T)).error;
}

// ---- exported functions ----

Napi::Value CtlOpen(const Napi::CallbackInfo& info) {
  std::string path;
  if (!ReadPath(info, 0, "path", &path)) return info.Env().Undefined();
  auto handle = std::make_shared<HANDLE>(INVALID_HANDLE_VALUE);
  auto* w = new WinWorker(
      info.Env(), "CreateFile(" + path + ")",
      [path, handle](const char** syscall) -> DWORD {
        *syscall = "CreateFileW";
        *handle = CreateFileW(Widen(path).c_str(), GENERIC_READ | GENERIC_WRITE,
                              FILE_SHARE_READ | FILE_SHARE_WRITE, nullptr, OPEN_EXISTING,
                              FILE_FLAG_OVERLAPPED, nullptr);
        return *handle == INVALID_HANDLE_VALUE ? GetLastError() : 0;
      },
      [handle](Napi::Env env) { return Napi::Number::New(env, HandleNumber(*handle)); });
  return w->Start();
}

Napi::Value CtlClose(const Napi::CallbackInfo& info) {
  HANDLE h;
  if (!ReadHandle(info, 0, &h)) return info.Env().Undefined();
  auto* w = new WinWorker(
      info.Env(), "CloseHandle(ferry control handle)",
      [h](const char** syscall) -> DWORD {
        *syscall = "CloseHandle";
        return CloseHandle(h) ? 0 : GetLastError();
      },
      [](Napi::Env env) { return env.Undefined(); });
  return w->Start();
}

Napi::Value CtlVersion(const Napi::CallbackInfo& info) {
  HANDLE h;
  if (!ReadHandle(info, 0, &h)) return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_version>();
  InitArg(arg.get());
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_VERSION)",
      [h, arg](const char**) { return BufferedCall(h, FERRY_WIN_IOC_VERSION, arg.get()); },
      [arg](Napi::Env env) { return VersionObject(env, *arg); });
  return w->Start();
}

// LIST: the struct, then the entries, in one buffered output.
struct ListBuf {
  ferry_ioc_list list;
  ferry_dev_info entries[FERRY_MAX_DEVICES];
};

Napi::Value CtlList(const Napi::CallbackInfo& info) {
  HANDLE h;
  if (!ReadHandle(info, 0, &h)) return info.Env().Undefined();
  auto buf = std::make_shared<ListBuf>();
  std::memset(buf.get(), 0, sizeof(ListBuf));
  InitArg(&buf->list);
  buf->list.capacity = FERRY_MAX_DEVICES;
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_LIST)",
      [h, buf](const char**) {
        return Ioctl(h, FERRY_WIN_IOC_LIST, &buf->list, sizeof(buf->list), buf.get(),
                     sizeof(ListBuf))
            .error;
      },
      [buf](Napi::Env env) {
        Napi::Array out = Napi::Array::New(env, buf->list.returned);
        for (uint32_t i = 0; i < buf->list.returned && i < FERRY_MAX_DEVICES; i++)
          out.Set(i, DevInfoObject(env, buf->entries[i]));
        return out;
      });
  return w->Start();
}

Napi::Value CtlGetChanges(const Napi::CallbackInfo& info) {
  HANDLE h;
  Napi::Buffer<uint8_t> buf;
  if (!ReadHandle(info, 0, &h) || !ReadBuffer(info, 1, "buffer", &buf) ||
      !CheckOutBuffer(info.Env(), buf, sizeof(ferry_ioc_get)))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_get>();
  InitArg(arg.get());
  uint8_t* data = buf.Data();
  DWORD len = static_cast<DWORD>(buf.Length());
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_GET_CHANGES)",
      [h, arg, data, len](const char**) {
        ferry_ioc_get in = *arg;
        IoResult r = Ioctl(h, FERRY_WIN_IOC_GET_CHANGES, &in, sizeof(in), data, len);
        // the results are the last bytes of the output (also on EMSGSIZE)
        if (r.error == 0 || FERRY_WIN_STATUS_IS_WARNING(r.error))
          std::memcpy(arg.get(), data + len - sizeof(ferry_ioc_get), sizeof(ferry_ioc_get));
        return r.error;
      },
      [arg](Napi::Env env) { return GetChangesObject(env, *arg); },
      [arg](Napi::Env, Napi::Error& error) {
        if (arg->needed) error.Set("needed", Num(arg->needed + sizeof(ferry_ioc_get)));
      });
  w->Keep(buf);
  return w->Start();
}

Napi::Value CtlCommit(const Napi::CallbackInfo& info) {
  HANDLE h;
  uint64_t batch_id;
  if (!ReadHandle(info, 0, &h) || !ReadU64(info, 1, "batchId", &batch_id))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_commit>();
  InitArg(arg.get());
  arg->batch_id = batch_id;
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_COMMIT)",
      [h, arg](const char**) {
        return Ioctl(h, FERRY_WIN_IOC_COMMIT, arg.get(), sizeof(*arg), nullptr, 0).error;
      },
      [](Napi::Env env) { return env.Undefined(); });
  return w->Start();
}

Napi::Value CtlWait(const Napi::CallbackInfo& info) {
  HANDLE h;
  uint32_t timeout_ms;
  if (!ReadHandle(info, 0, &h) || !ReadU32(info, 1, "timeoutMs", &timeout_ms))
    return info.Env().Undefined();
  if (timeout_ms >= INFINITE) {
    ThrowRangeError(info.Env(), "The \"timeoutMs\" argument is too large");
    return info.Env().Undefined();
  }
  auto ready = std::make_shared<bool>(false);
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_WAIT)",
      [h, timeout_ms, ready](const char**) -> DWORD {
        ferry_win_wait arg;
        InitArg(&arg);
        IoResult r = Ioctl(h, FERRY_WIN_IOC_WAIT, &arg, sizeof(arg), &arg, sizeof(arg), timeout_ms);
        if (r.timed_out && (r.error == ERROR_OPERATION_ABORTED || r.error == 0)) {
          *ready = r.error == 0 && arg.ready != 0;  // completed just before the cancel
          return 0;
        }
        *ready = r.error == 0 && arg.ready != 0;
        return r.error;
      },
      [ready](Napi::Env env) { return Napi::Boolean::New(env, *ready); });
  return w->Start();
}

Napi::Value CtlTag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HANDLE h;
  auto arg = std::make_shared<ferry_ioc_tag>();
  InitArg(arg.get());
  if (!ReadHandle(info, 0, &h) || !ReadTagArgs(info, 1, arg.get()))
    return env.Undefined();
  auto* w = new WinWorker(
      env, "DeviceIoControl(FERRY_WIN_IOC_TAG)",
      [h, arg](const char**) { return BufferedCall(h, FERRY_WIN_IOC_TAG, arg.get()); },
      [arg](Napi::Env e) { return TagObject(e, *arg); },
      [arg](Napi::Env, Napi::Error& error) { error.Set("holdNs", Num(arg->hold_ns)); });
  return w->Start();
}

Napi::Value CtlHold(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HANDLE h;
  auto arg = std::make_shared<ferry_ioc_hold>();
  InitArg(arg.get());
  if (!ReadHandle(info, 0, &h) || !ReadHoldArgs(info, 1, arg.get())) return env.Undefined();
  auto* w = new WinWorker(
      env, "DeviceIoControl(FERRY_WIN_IOC_HOLD)",
      [h, arg](const char**) { return BufferedCall(h, FERRY_WIN_IOC_HOLD, arg.get()); },
      [arg](Napi::Env e) { return HoldObject(e, *arg); },
      [arg](Napi::Env, Napi::Error& error) { error.Set("drainNs", Num(arg->drain_ns)); });
  return w->Start();
}

Napi::Value CtlRelease(const Napi::CallbackInfo& info) {
  HANDLE h;
  uint64_t hold_id;
  if (!ReadHandle(info, 0, &h) || !ReadU64(info, 1, "holdId", &hold_id))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_release>();
  InitArg(arg.get());
  arg->hold_id = hold_id;
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_RELEASE)",
      [h, arg](const char**) { return BufferedCall(h, FERRY_WIN_IOC_RELEASE, arg.get()); },
      [arg](Napi::Env env) { return ReleaseObject(env, *arg); });
  return w->Start();
}

Napi::Value CtlStats(const Napi::CallbackInfo& info) {
  HANDLE h;
  uint32_t dev = FERRY_DEV_NONE;
  if (!ReadHandle(info, 0, &h)) return info.Env().Undefined();
  if (!info[1].IsUndefined() && !info[1].IsNull() && !ReadU32(info, 1, "devIndex", &dev))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_stats>();
  InitArg(arg.get());
  arg->dev_index = dev;
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_STATS)",
      [h, arg](const char**) { return BufferedCall(h, FERRY_WIN_IOC_STATS, arg.get()); },
      [arg](Napi::Env env) { return StatsObject(env, *arg); });
  return w->Start();
}

Napi::Value CtlGetBitmap(const Napi::CallbackInfo& info) {
  HANDLE h;
  uint32_t dev;
  Napi::Buffer<uint8_t> buf;
  uint64_t start;
  bool cut;
  if (!ReadHandle(info, 0, &h) || !ReadU32(info, 1, "devIndex", &dev) ||
      !ReadBuffer(info, 2, "buffer", &buf) || !ReadU64(info, 3, "startByte", &start) ||
      !ReadBool(info, 4, "cut", &cut) || !CheckOutBuffer(info.Env(), buf, sizeof(ferry_ioc_bitmap)))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_bitmap>();
  InitArg(arg.get());
  arg->dev_index = dev;
  arg->flags = cut ? FERRY_BITMAP_F_CUT : 0;
  arg->start_byte = start;
  // the bitmap bytes first, the struct in the last bytes of the output
  arg->buf_len = static_cast<uint32_t>(buf.Length() - sizeof(ferry_ioc_bitmap));
  uint8_t* data = buf.Data();
  DWORD len = static_cast<DWORD>(buf.Length());
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_GET_BITMAP)",
      [h, arg, data, len](const char**) {
        ferry_ioc_bitmap in = *arg;
        IoResult r = Ioctl(h, FERRY_WIN_IOC_GET_BITMAP, &in, sizeof(in), data, len);
        if (r.error == 0)
          std::memcpy(arg.get(), data + len - sizeof(ferry_ioc_bitmap), sizeof(ferry_ioc_bitmap));
        return r.error;
      },
      [arg](Napi::Env env) { return BitmapObject(env, *arg); });
  w->Keep(buf);
  return w->Start();
}

Napi::Value CtlClearBitmap(const Napi::CallbackInfo& info) {
  HANDLE h;
  uint32_t dev;
  uint64_t epoch, start_bit, nbits;
  if (!ReadHandle(info, 0, &h) || !ReadU32(info, 1, "devIndex", &dev) ||
      !ReadU64(info, 2, "epoch", &epoch) || !ReadU64(info, 3, "startBit", &start_bit) ||
      !ReadU64(info, 4, "nbits", &nbits))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_clear_bitmap>();
  InitArg(arg.get());
  arg->dev_index = dev;
  arg->epoch = epoch;
  arg->start_bit = start_bit;
  arg->nbits = nbits;
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_CLEAR_BITMAP)",
      [h, arg](const char**) { return BufferedCall(h, FERRY_WIN_IOC_CLEAR_BITMAP, arg.get()); },
      [arg](Napi::Env env) { return Napi::Number::New(env, Num(arg->dirty_bits)); },
      [arg](Napi::Env, Napi::Error& error) { error.Set("dirtyBits", Num(arg->dirty_bits)); });
  return w->Start();
}

Napi::Value CtlResyncMark(const Napi::CallbackInfo& info) {
  HANDLE h;
  uint32_t dev, length;
  uint64_t offset;
  if (!ReadHandle(info, 0, &h) || !ReadU32(info, 1, "devIndex", &dev) ||
      !ReadU64(info, 2, "offset", &offset) || !ReadU32(info, 3, "length", &length))
    return info.Env().Undefined();
  auto arg = std::make_shared<ferry_ioc_resync>();
  InitArg(arg.get());
  arg->dev_index = dev;
  arg->offset = offset;
  arg->length = length;
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_RESYNC_MARK)",
      [h, arg](const char**) { return BufferedCall(h, FERRY_WIN_IOC_RESYNC_MARK, arg.get()); },
      [arg](Napi::Env env) { return Napi::Number::New(env, Num(arg->seq)); });
  return w->Start();
}

// Windows only: re-read the protection list from the registry.
Napi::Value CtlRescan(const Napi::CallbackInfo& info) {
  HANDLE h;
  if (!ReadHandle(info, 0, &h)) return info.Env().Undefined();
  auto arg = std::make_shared<ferry_win_rescan>();
  InitArg(arg.get());
  auto* w = new WinWorker(
      info.Env(), "DeviceIoControl(FERRY_WIN_IOC_RESCAN)",
      [h, arg](const char**) { return BufferedCall(h, FERRY_WIN_IOC_RESCAN, arg.get()); },
      [arg](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("started", arg->started);
        o.Set("stopped", arg->stopped);
        o.Set("failed", arg->failed);
        o.Set("tracked", arg->tracked);
        return o;
      });
  return w->Start();
}

// Any METHOD_BUFFERED ferryflt IOCTL on a caller-built buffer (tests).
Napi::Value CtlIoctlRaw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HANDLE h;
  uint32_t request;
  Napi::Buffer<uint8_t> buf;
  if (!ReadHandle(info, 0, &h) || !ReadU32(info, 1, "request", &request) ||
      !ReadBuffer(info, 2, "buffer", &buf))
    return env.Undefined();
  if (FERRY_WIN_CODE_DEVICE_TYPE(request) != FERRY_WIN_DEVICE_TYPE ||
      FERRY_WIN_CODE_METHOD(request) != FERRY_WIN_BUFFERED) {
    ThrowRangeError(env, "ctlIoctlRaw: request is not a buffered ferryflt IOCTL");
    return env.Undefined();
  }
  if (buf.Length() > 0xffffffffULL) {
    ThrowRangeError(env, "ctlIoctlRaw: buffer too large");
    return env.Undefined();
  }
  uint8_t* data = buf.Data();
  DWORD len = static_cast<DWORD>(buf.Length());
  auto returned = std::make_shared<DWORD>(0);
  auto* w = new WinWorker(
      env, "DeviceIoControl(ferryflt " + std::to_string((request >> 2) & 0xfff) + ")",
      [h, request, data, len, returned](const char**) {
        IoResult r = Ioctl(h, request, data, len, data, len);
        *returned = r.bytes;
        return r.error;
      },
      [returned](Napi::Env e) { return Napi::Number::New(e, *returned); });
  w->Keep(buf);
  return w->Start();
}

}  // namespace

void RegisterControlWin(Napi::Env env, Napi::Object exports) {
  exports.Set("ctlOpen", Napi::Function::New(env, CtlOpen, "ctlOpen"));
  exports.Set("ctlClose", Napi::Function::New(env, CtlClose, "ctlClose"));
  exports.Set("ctlVersion", Napi::Function::New(env, CtlVersion, "ctlVersion"));
  exports.Set("ctlList", Napi::Function::New(env, CtlList, "ctlList"));
  exports.Set("ctlGetChanges", Napi::Function::New(env, CtlGetChanges, "ctlGetChanges"));
  exports.Set("ctlCommit", Napi::Function::New(env, CtlCommit, "ctlCommit"));
  exports.Set("ctlWait", Napi::Function::New(env, CtlWait, "ctlWait"));
  exports.Set("ctlTag", Napi::Function::New(env, CtlTag, "ctlTag"));
  exports.Set("ctlHold", Napi::Function::New(env, CtlHold, "ctlHold"));
  exports.Set("ctlRelease", Napi::Function::New(env, CtlRelease, "ctlRelease"));
  exports.Set("ctlStats", Napi::Function::New(env, CtlStats, "ctlStats"));
  exports.Set("ctlGetBitmap", Napi::Function::New(env, CtlGetBitmap, "ctlGetBitmap"));
  exports.Set("ctlClearBitmap", Napi::Function::New(env, CtlClearBitmap, "ctlClearBitmap"));
  exports.Set("ctlResyncMark", Napi::Function::New(env, CtlResyncMark, "ctlResyncMark"));
  exports.Set("ctlRescan", Napi::Function::New(env, CtlRescan, "ctlRescan"));
  exports.Set("ctlIoctlRaw", Napi::Function::New(env, CtlIoctlRaw, "ctlIoctlRaw"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("FERRY_IOC_VERSION", static_cast<double>(FERRY_WIN_IOC_VERSION));
  c.Set("FERRY_IOC_LIST", static_cast<double>(FERRY_WIN_IOC_LIST));
  c.Set("FERRY_IOC_GET_CHANGES", static_cast<double>(FERRY_WIN_IOC_GET_CHANGES));
  c.Set("FERRY_IOC_COMMIT", static_cast<double>(FERRY_WIN_IOC_COMMIT));
  c.Set("FERRY_IOC_TAG", static_cast<double>(FERRY_WIN_IOC_TAG));
  c.Set("FERRY_IOC_STATS", static_cast<double>(FERRY_WIN_IOC_STATS));
  c.Set("FERRY_IOC_GET_BITMAP", static_cast<double>(FERRY_WIN_IOC_GET_BITMAP));
  c.Set("FERRY_IOC_CLEAR_BITMAP", static_cast<double>(FERRY_WIN_IOC_CLEAR_BITMAP));
  c.Set("FERRY_IOC_RESYNC_MARK", static_cast<double>(FERRY_WIN_IOC_RESYNC_MARK));
  c.Set("FERRY_IOC_HOLD", static_cast<double>(FERRY_WIN_IOC_HOLD));
  c.Set("FERRY_IOC_RELEASE", static_cast<double>(FERRY_WIN_IOC_RELEASE));
  c.Set("FERRY_WIN_IOC_WAIT", static_cast<double>(FERRY_WIN_IOC_WAIT));
  c.Set("FERRY_WIN_IOC_RESCAN", static_cast<double>(FERRY_WIN_IOC_RESCAN));
  c.Set("FERRY_WIN_IOC_VSS_ARM", static_cast<double>(FERRY_WIN_IOC_VSS_ARM));
  c.Set("FERRY_WIN_IOC_VSS_RESULT", static_cast<double>(FERRY_WIN_IOC_VSS_RESULT));
  c.Set("FERRY_ABI_VERSION", FERRY_ABI_VERSION);
  c.Set("sizeofBatchHeader", static_cast<double>(sizeof(ferry_batch_hdr)));
  c.Set("sizeofRecord", static_cast<double>(sizeof(ferry_rec)));
  c.Set("sizeofDevInfo", static_cast<double>(sizeof(ferry_dev_info)));
  // bytes of an output Buffer that the result struct takes on Windows
  c.Set("getChangesTrailer", static_cast<double>(sizeof(ferry_ioc_get)));
  c.Set("getBitmapTrailer", static_cast<double>(sizeof(ferry_ioc_bitmap)));
  exports.Set("ctlConstants", c);
}

}  // namespace ferry
