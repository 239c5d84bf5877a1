// Shared pieces of the Windows backend: handles passed to JS as numbers,
// overlapped DeviceIoControl with a bounded wait, and the AsyncWorker that
// runs a Win32 call on a libuv thread and settles a Promise.
#pragma once

#include "win_errors.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ferry {

// Handles travel to JS as plain numbers (small multiples of 4 in practice).
inline double HandleNumber(HANDLE h) {
  return static_cast<double>(reinterpret_cast<uintptr_t>(h));
}
inline HANDLE NumberHandle(int fd) {
  return reinterpret_cast<HANDLE>(static_cast<uintptr_t>(fd));
}

struct IoResult {
  DWORD error = 0;      // 0 or the Win32 / ferry status code
  DWORD bytes = 0;      // IoStatus.Information
  bool timed_out = false;
};

// DeviceIoControl on a handle opened with FILE_FLAG_OVERLAPPED.  Waits at
// most timeout_ms (INFINITE: no bound); on timeout cancels the request
// (CancelIoEx) and waits for the cancellation to finish, so the buffers
// are never written after this returns.
IoResult Ioctl(HANDLE h, DWORD code, const void* in, DWORD in_len, void* out,
               DWORD out_len, DWORD timeout_ms = INFINITE);

// Runs exec() on a worker thread.  exec returns 0 or a Win32 / ferry
// status code and may name the failing call; result() builds the value on
// the JS thread; decorate() adds properties to a rejection.
class WinWorker : public Napi::AsyncWorker {
 public:
  using Exec = std::function<DWORD(const char** syscall)>;
  using Result = std::function<Napi::Value(Napi::Env)>;
  using Decorate = std::function<void(Napi::Env, Napi::Error&)>;

  WinWorker(Napi::Env env, std::string label, Exec exec, Result result,
            Decorate decorate = nullptr);

  Napi::Promise Promise() const { return deferred_.Promise(); }
  // Keeps a JS object (a Buffer being filled) alive until the call ends.
  void Keep(Napi::Object object) { kept_.push_back(Napi::Persistent(object)); }
  // Queues the worker (it deletes itself) and returns its Promise.
  Napi::Value Start();

 protected:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error&) override;

 private:
  Napi::Promise::Deferred deferred_;
  std::string label_;
  Exec exec_;
  Result result_;
  Decorate decorate_;
  std::vector<Napi::ObjectReference> kept_;
  DWORD error_ = 0;
  const char* syscall_ = "DeviceIoControl";
};

}  // namespace ferry
