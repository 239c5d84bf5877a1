// Block-device helpers on Windows: size, logical sector size and
// unbuffered reads of a volume (\\?\Volume{GUID}, \\.\E:), a disk or an
// image file.
//
// deviceSize and logicalBlockSize take a file descriptor from fs.open and
// answer synchronously, as on Linux: both are metadata queries the volume
// stack answers from memory (IOCTL_DISK_GET_LENGTH_INFO,
// IOCTL_STORAGE_QUERY_PROPERTY), like BLKGETSIZE64 there.  readDirect does
// disk I/O and runs on a worker thread.
#include <winsock2.h>
#include <windows.h>
#include <winioctl.h>

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "args.h"
#include "errors.h"
#include "register_win.h"
#include "win_io.h"

namespace ferry {

namespace {

constexpr int64_t kSectorSize = 512;
constexpr int64_t kMaxLength = int64_t{1} << 30;  // 1 GiB per call, as on Linux
constexpr DWORD kChunk = 16u << 20;               // per ReadFile

bool ReadOsHandle(const Napi::CallbackInfo& info, HANDLE* out) {
  int fd;
  if (!ReadFd(info, 0, "fd", &fd)) return false;
  // a libuv (CRT) descriptor from fs.open
  *out = reinterpret_cast<HANDLE>(uv_get_osfhandle(fd));
  if (*out == INVALID_HANDLE_VALUE) {
    WinError(info.Env(), ERROR_INVALID_HANDLE, "uv_get_osfhandle", "deviceSize")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// IOCTLs a regular file does not support: fall back to file semantics.
bool NotADevice(DWORD err) {
  return err == ERROR_INVALID_FUNCTION || err == ERROR_INVALID_PARAMETER ||
         err == ERROR_NOT_SUPPORTED;
}

Napi::Value DeviceSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HANDLE h;
  if (!ReadOsHandle(info, &h)) return env.Undefined();
  GET_LENGTH_INFORMATION len;
  DWORD got = 0;
  if (DeviceIoControl(h, IOCTL_DISK_GET_LENGTH_INFO, nullptr, 0, &len, sizeof(len), &got,
                      nullptr))
    return Napi::Number::New(env, static_cast<double>(len.Length.QuadPart));
  DWORD err = GetLastError();
  LARGE_INTEGER size;
  if (NotADevice(err) && GetFileType(h) == FILE_TYPE_DISK && GetFileSizeEx(h, &size))
    return Napi::Number::New(env, static_cast<double>(size.QuadPart));
  WinError(env, err, "DeviceIoControl", "DeviceIoControl(IOCTL_DISK_GET_LENGTH_INFO)")
      .ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value LogicalBlockSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HANDLE h;
  if (!ReadOsHandle(info, &h)) return env.Undefined();
  STORAGE_PROPERTY_QUERY q = {};
  q.PropertyId = StorageAccessAlignmentProperty;
  q.QueryType = PropertyStandardQuery;
  STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR align = {};
  DWORD got = 0;
  if (DeviceIoControl(h, IOCTL_STORAGE_QUERY_PROPERTY, &q, sizeof(q), &align, sizeof(align),
                      &got, nullptr) &&
      got >= sizeof(align) && align.BytesPerLogicalSector)
    return Napi::Number::New(env, align.BytesPerLogicalSector);
  DISK_GEOMETRY_EX geo = {};
  if (DeviceIoControl(h, IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, nullptr, 0, &geo, sizeof(geo), &got,
                      nullptr) &&
      geo.Geometry.BytesPerSector)
    return Napi::Number::New(env, geo.Geometry.BytesPerSector);
  DWORD err = GetLastError();
  if (NotADevice(err) && GetFileType(h) == FILE_TYPE_DISK)
    return Napi::Number::New(env, 512);  // a regular (image) file
  WinError(env, err, "DeviceIoControl", "DeviceIoControl(IOCTL_STORAGE_QUERY_PROPERTY)")
      .ThrowAsJavaScriptException();
  return env.Undefined();
}

struct VirtualFreer {
  void operator()(uint8_t* p) const { VirtualFree(p, 0, MEM_RELEASE); }
};

// FILE_FLAG_NO_BUFFERING read into page-aligned memory (VirtualAlloc),
// handed to an external Buffer without a copy.
class DirectReadWorker : public Napi::AsyncWorker {
 public:
  DirectReadWorker(Napi::Env env, std::string path, int64_t offset, int64_t length)
      : Napi::AsyncWorker(env, "ferry:readDirect"),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        offset_(offset),
        length_(static_cast<size_t>(length)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    HANDLE h = CreateFileW(Widen(path_).c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE,
                           nullptr, OPEN_EXISTING, FILE_FLAG_NO_BUFFERING, nullptr);
    if (h == INVALID_HANDLE_VALUE) return Fail(GetLastError(), "CreateFileW");
    if (length_ > 0) {
      void* mem = VirtualAlloc(nullptr, length_, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
      if (mem == nullptr) {
        DWORD err = GetLastError();
        CloseHandle(h);
        return Fail(err, "VirtualAlloc");
      }
      buffer_.reset(static_cast<uint8_t*>(mem));
    }
    while (bytes_read_ < length_) {
      size_t left = length_ - bytes_read_;
      DWORD want = left > kChunk ? kChunk : static_cast<DWORD>(left);
      uint64_t pos = static_cast<uint64_t>(offset_) + bytes_read_;
      OVERLAPPED ov = {};  // only the position: the handle is synchronous
      ov.Offset = static_cast<DWORD>(pos);
      ov.OffsetHigh = static_cast<DWORD>(pos >> 32);
      DWORD got = 0;
      if (!ReadFile(h, buffer_.get() + bytes_read_, want, &got, &ov)) {
        DWORD err = GetLastError();
        if (err == ERROR_HANDLE_EOF) break;
        CloseHandle(h);
        return Fail(err, "ReadFile");
      }
      bytes_read_ += got;
      // an empty or partial read has reached the end
      if (got == 0 || got % kSectorSize != 0 || got < want) break;
    }
    CloseHandle(h);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (bytes_read_ == 0) {
      deferred_.Resolve(Napi::Buffer<uint8_t>::New(env, 0));
      return;
    }
    uint8_t* data = buffer_.release();
    Napi::Buffer<uint8_t> result = Napi::Buffer<uint8_t>::New(
        env, data, bytes_read_, [](Napi::Env, uint8_t* p) { VirtualFree(p, 0, MEM_RELEASE); });
    if (result.IsEmpty()) {
      VirtualFree(data, 0, MEM_RELEASE);
      deferred_.Reject(env.GetAndClearPendingException().Value());
      return;
    }
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error&) override {
    deferred_.Reject(WinError(Env(), error_, syscall_, "readDirect(" + path_ + ")").Value());
  }

 private:
  void Fail(DWORD err, const char* syscall) {
    error_ = err;
    syscall_ = syscall;
    SetError("readDirect");
  }

  Napi::Promise::Deferred deferred_;
  std::string path_;
  int64_t offset_;
  size_t length_;
  std::unique_ptr<uint8_t, VirtualFreer> buffer_;
  size_t bytes_read_ = 0;
  DWORD error_ = 0;
  const char* syscall_ = "";
};

Napi::Value RejectedPromise(Napi::Env env, const Napi::Error& error) {
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(error.Value());
  return deferred.Promise();
}

Napi::Value ReadDirect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  int64_t offset, length;
  if (!ReadPath(info, 0, "path", &path) || !ReadOffset(info, 1, "offset", &offset) ||
      !ReadOffset(info, 2, "length", &length))
    return env.Undefined();
  if (offset % kSectorSize != 0 || length % kSectorSize != 0) {
    Napi::RangeError error = Napi::RangeError::New(
        env, "readDirect: offset (" + std::to_string(offset) + ") and length (" +
                 std::to_string(length) +
                 ") must be multiples of 512 (of the logical sector size on 4Kn disks)");
    error.Set("code", "EINVAL");
    error.Set("errno", 22.0);
    return RejectedPromise(env, error);
  }
  if (length > kMaxLength) {
    Napi::RangeError error = Napi::RangeError::New(
        env, "readDirect: length (" + std::to_string(length) +
                 ") exceeds the per-call limit of " + std::to_string(kMaxLength) + " bytes");
    error.Set("code", "ERR_OUT_OF_RANGE");
    return RejectedPromise(env, error);
  }
  auto* worker = new DirectReadWorker(env, std::move(path), offset, length);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void RegisterDeviceWin(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceSize", Napi::Function::New(env, DeviceSize, "deviceSize"));
  exports.Set("logicalBlockSize", Napi::Function::New(env, LogicalBlockSize, "logicalBlockSize"));
  exports.Set("readDirect", Napi::Function::New(env, ReadDirect, "readDirect"));
}

}  // namespace ferry
