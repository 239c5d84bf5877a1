// Overlapped DeviceIoControl and the promise-settling worker (win_io.h).
#include "win_io.h"

#include <utility>

namespace ferry {

IoResult Ioctl(HANDLE h, DWORD code, const void* in, DWORD in_len, void* out,
               DWORD out_len, DWORD timeout_ms) {
  IoResult r;
  OVERLAPPED ov = {};
  ov.hEvent = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  if (ov.hEvent == nullptr) {
    r.error = GetLastError();
    return r;
  }
  DWORD bytes = 0;
  BOOL ok = DeviceIoControl(h, code, const_cast<void*>(in), in_len, out, out_len, &bytes, &ov);
  DWORD err = ok ? 0 : GetLastError();
  if (ok || err == ERROR_IO_PENDING) {
    if (!ok && WaitForSingleObject(ov.hEvent, timeout_ms) == WAIT_TIMEOUT) {
      CancelIoEx(h, &ov);
      r.timed_out = true;
    }
    // waits for completion (or for the cancellation to complete)
    ok = GetOverlappedResult(h, &ov, &bytes, TRUE);
    err = ok ? 0 : GetLastError();
  } else {
    // failed at once; ferryflt's warning statuses still copied the results
    bytes = static_cast<DWORD>(ov.InternalHigh);
  }
  CloseHandle(ov.hEvent);
  r.error = err;
  r.bytes = bytes;
  return r;
}

WinWorker::WinWorker(Napi::Env env, std::string label, Exec exec, Result result,
                     Decorate decorate)
    : Napi::AsyncWorker(env, "ferry:win"),
      deferred_(Napi::Promise::Deferred::New(env)),
      label_(std::move(label)),
      exec_(std::move(exec)),
      result_(std::move(result)),
      decorate_(std::move(decorate)) {}

Napi::Value WinWorker::Start() {
  Napi::Promise promise = deferred_.Promise();
  Queue();  // deletes itself after OnOK/OnError
  return promise;
}

void WinWorker::Execute() {
  const char* syscall = "DeviceIoControl";
  DWORD err = exec_(&syscall);
  if (err != 0) {
    error_ = err;
    syscall_ = syscall;
    SetError(label_);
  }
}

void WinWorker::OnOK() {
  Napi::Env env = Env();
  Napi::Value value = result_(env);
  if (env.IsExceptionPending()) {
    deferred_.Reject(env.GetAndClearPendingException().Value());
    return;
  }
  deferred_.Resolve(value);
}

void WinWorker::OnError(const Napi::Error&) {
  Napi::Error error = WinError(Env(), error_, syscall_, label_);
  if (decorate_) decorate_(Env(), error);
  deferred_.Reject(error.Value());
}

}  // namespace ferry
