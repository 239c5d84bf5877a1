// Errno names and texts for errors.cc on Windows, plus Win32/HRESULT
// errors (win_errors.h).  Errno names and numbers are Linux's: the agent
// compares .code strings, and they must mean the same on both systems.
#include "win_errors.h"

#include <cstdio>

#include "errors.h"
#include "ferry_winioctl.h"

namespace ferry {

namespace {

struct ErrnoInfo {
  int value;
  const char* name;
  const char* text;
};

// The errnos the Windows build can produce (Linux values).
const ErrnoInfo kErrnos[] = {
    {1, "EPERM", "Operation not permitted"},
    {2, "ENOENT", "No such file or directory"},
    {5, "EIO", "Input/output error"},
    {9, "EBADF", "Bad file descriptor"},
    {11, "EAGAIN", "Resource temporarily unavailable"},
    {12, "ENOMEM", "Cannot allocate memory"},
    {13, "EACCES", "Permission denied"},
    {14, "EFAULT", "Bad address"},
    {16, "EBUSY", "Device or resource busy"},
    {17, "EEXIST", "File exists"},
    {19, "ENODEV", "No such device"},
    {22, "EINVAL", "Invalid argument"},
    {25, "ENOTTY", "Inappropriate ioctl for device"},
    {28, "ENOSPC", "No space left on device"},
    {34, "ERANGE", "Numerical result out of range"},
    {38, "ENOSYS", "Function not implemented"},
    {71, "EPROTO", "Protocol error"},
    {90, "EMSGSIZE", "Message too long"},
    {95, "EOPNOTSUPP", "Operation not supported"},
    {105, "ENOBUFS", "No buffer space available"},
    {110, "ETIMEDOUT", "Connection timed out"},
    {116, "ESTALE", "Stale file handle"},
    {125, "ECANCELED", "Operation canceled"},
};

const ErrnoInfo* FindErrno(int value) {
  for (const ErrnoInfo& e : kErrnos)
    if (e.value == value) return &e;
  return nullptr;
}

std::string Win32Text(DWORD err) {
  char buf[512];
  DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                           nullptr, err, 0, buf, sizeof(buf), nullptr);
  while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n' || buf[n - 1] == '.'))
    n--;
  if (n == 0) {
    std::snprintf(buf, sizeof(buf), "Windows error %lu", static_cast<unsigned long>(err));
    return buf;
  }
  return std::string(buf, n);
}

}  // namespace

int ErrnoFromWin32(DWORD err) {
  unsigned int ferry = FERRY_WIN_STATUS_ERRNO(err);
  if (ferry != 0) return static_cast<int>(ferry);
  switch (err) {
    case ERROR_INVALID_FUNCTION: return 25;          // unknown IOCTL: ENOTTY
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND: return 2;             // driver not loaded: ENOENT
    case ERROR_ACCESS_DENIED:
    case ERROR_PRIVILEGE_NOT_HELD: return 13;
    case ERROR_INVALID_HANDLE: return 9;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_NO_SYSTEM_RESOURCES: return 12;
    case ERROR_NOT_READY: return 11;
    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION:
    case ERROR_BUSY: return 16;
    case ERROR_NOT_SUPPORTED: return 95;
    case ERROR_INVALID_PARAMETER: return 22;
    case ERROR_INSUFFICIENT_BUFFER:
    case ERROR_MORE_DATA: return 90;
    case ERROR_NOACCESS: return 14;
    case ERROR_OPERATION_ABORTED: return 125;
    case ERROR_TIMEOUT:
    case WAIT_TIMEOUT: return 110;
    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS: return 17;
    case ERROR_CRC:
    case ERROR_IO_DEVICE:
    case ERROR_SECTOR_NOT_FOUND:
    case ERROR_DEVICE_NOT_CONNECTED: return 5;
    default: return 0;
  }
}

Napi::Error WinError(Napi::Env env, DWORD err, const char* syscall,
                     const std::string& label) {
  int e = ErrnoFromWin32(err);
  const ErrnoInfo* info = e ? FindErrno(e) : nullptr;
  // ferryflt's statuses have no system text: use the errno's
  std::string text = FERRY_WIN_STATUS_ERRNO(err) != 0 && info != nullptr
                         ? std::string(info->text)
                         : Win32Text(err);
  Napi::Error error = Napi::Error::New(env, label + " failed: " + text);
  error.Set("code", info != nullptr ? info->name : "UNKNOWN");
  if (info != nullptr) error.Set("errno", static_cast<double>(info->value));
  error.Set("syscall", syscall);
  error.Set("winError", static_cast<double>(err));
  return error;
}

Napi::Error HresultError(Napi::Env env, long hr, const char* stage,
                         const std::string& label) {
  char text[160];
  std::snprintf(text, sizeof(text), "%s failed at %s: HRESULT 0x%08lx", label.c_str(), stage,
                static_cast<unsigned long>(hr));
  Napi::Error error = Napi::Error::New(env, text);
  // a timeout of ours is reported as ETIMEDOUT, everything else by its HRESULT
  bool timeout = static_cast<unsigned long>(hr) ==
                 static_cast<unsigned long>(HRESULT_FROM_WIN32(ERROR_TIMEOUT));
  error.Set("code", timeout ? "ETIMEDOUT" : "ERR_FERRY_VSS");
  if (timeout) error.Set("errno", 110.0);
  error.Set("hresult", static_cast<double>(static_cast<unsigned long>(hr)));
  error.Set("stage", stage);
  return error;
}

// ---- errors.h ----

const char* ErrnoName(int err) {
  const ErrnoInfo* info = FindErrno(err);
  return info != nullptr ? info->name : "UNKNOWN";
}

const char* ErrnoDescription(int err) {
  const ErrnoInfo* info = FindErrno(err);
  return info != nullptr ? info->text : "Unknown error";
}

// ---- UTF-8 / UTF-16 ----

std::wstring Widen(const std::string& s) {
  if (s.empty()) return std::wstring();
  int n = MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring out(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), &out[0], n);
  return out;
}

std::string Narrow(const std::wstring& s) {
  if (s.empty()) return std::string();
  int n = WideCharToMultiByte(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0,
                              nullptr, nullptr);
  std::string out(static_cast<size_t>(n), '\0');
  WideCharToMultiByte(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), &out[0], n, nullptr,
                      nullptr);
  return out;
}

}  // namespace ferry
