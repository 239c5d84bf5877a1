// readDirect: O_DIRECT reads on a worker thread, resolved as a Node Buffer.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>

#include "args.h"
#include "errors.h"
#include "register.h"
#include "scoped_fd.h"

namespace ferry {

namespace {

constexpr int64_t kSectorSize = 512;
constexpr size_t kMemoryAlignment = 4096;
constexpr int64_t kMaxLength = int64_t{1} << 30;  // 1 GiB per call

struct FreeDeleter {
  void operator()(uint8_t* data) const { free(data); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

class DirectReadWorker : public Napi::AsyncWorker {
 public:
  DirectReadWorker(Napi::Env env, std::string path, int64_t offset,
                   int64_t length)
      : Napi::AsyncWorker(env, "ferry:readDirect"),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        offset_(offset),
        length_(static_cast<size_t>(length)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    ScopedFd fd(open(path_.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
    if (!fd.valid()) return Fail(errno, "open", "open(" + path_ + ", O_DIRECT)");
    if (length_ == 0) return;

    void* memory = nullptr;
    int rc = posix_memalign(&memory, kMemoryAlignment, length_);
    if (rc != 0) return Fail(rc, "posix_memalign", "posix_memalign");
    buffer_.reset(static_cast<uint8_t*>(memory));

    while (bytes_read_ < length_) {
      ssize_t n = pread(fd.get(), buffer_.get() + bytes_read_,
                        length_ - bytes_read_, offset_ + bytes_read_);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Fail(errno, "pread", "pread(" + path_ + ", O_DIRECT)");
      }
      bytes_read_ += static_cast<size_t>(n);
      // A read that is empty or ends mid-sector has reached end of file; the
      // next offset would be unaligned anyway.
      if (n == 0 || n % kSectorSize != 0) break;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (bytes_read_ == 0) {
      deferred_.Resolve(Napi::Buffer<uint8_t>::New(env, 0));
      return;
    }
    // Hand the aligned memory to an external Buffer (no copy on the JS
    // thread); its finalizer frees it once the Buffer is collected.
    uint8_t* data = buffer_.release();
    Napi::Buffer<uint8_t> result = Napi::Buffer<uint8_t>::New(
        env, data, bytes_read_, [](Napi::Env, uint8_t* p) { free(p); });
    if (result.IsEmpty()) {
      free(data);  // Buffer::New does not take ownership when it fails.
      deferred_.Reject(env.GetAndClearPendingException().Value());
      return;
    }
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error&) override {
    deferred_.Reject(ErrnoError(Env(), errno_, syscall_, label_).Value());
  }

 private:
  void Fail(int err, const char* syscall, std::string label) {
    errno_ = err;
    syscall_ = syscall;
    label_ = std::move(label);
    SetError(label_);
  }

  Napi::Promise::Deferred deferred_;
  std::string path_;
  int64_t offset_;
  size_t length_;
  AlignedBuffer buffer_;
  size_t bytes_read_ = 0;
  int errno_ = 0;
  const char* syscall_ = "";
  std::string label_;
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
  if (!ReadPath(info, 0, "path", &path) ||
      !ReadOffset(info, 1, "offset", &offset) ||
      !ReadOffset(info, 2, "length", &length)) {
    return env.Undefined();
  }
  if (offset % kSectorSize != 0 || length % kSectorSize != 0) {
    Napi::RangeError error = Napi::RangeError::New(
        env, "readDirect: offset (" + std::to_string(offset) +
                 ") and length (" + std::to_string(length) +
                 ") must be multiples of 512 for O_DIRECT");
    error.Set("code", "EINVAL");
    error.Set("errno", static_cast<double>(EINVAL));
    return RejectedPromise(env, error);
  }
  if (length > kMaxLength) {
    Napi::RangeError error = Napi::RangeError::New(
        env, "readDirect: length (" + std::to_string(length) +
                 ") exceeds the per-call limit of " +
                 std::to_string(kMaxLength) + " bytes");
    error.Set("code", "ERR_OUT_OF_RANGE");
    return RejectedPromise(env, error);
  }
  auto* worker = new DirectReadWorker(env, std::move(path), offset, length);
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // The worker deletes itself after OnOK/OnError.
  return promise;
}

}  // namespace

void RegisterDirectRead(Napi::Env env, Napi::Object exports) {
  exports.Set("readDirect", Napi::Function::New(env, ReadDirect, "readDirect"));
}

}  // namespace ferry
