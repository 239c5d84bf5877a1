// Windows errors as the addon's errno-shaped JS errors (errors_win.cc).
//
// A Win32 error becomes an Error with .code = the errno name the Linux
// build would use for the same condition ('ENOENT' when \\.\FerryCtl does
// not exist, 'EACCES', 'EINVAL', ...), .errno = the Linux errno value,
// .syscall, and .winError = the GetLastError() value.  ferryflt's own
// status codes (customer NTSTATUS 0xE0F7xxxx / 0xA0F7xxxx) carry the
// Linux errno in their low 16 bits and come back unchanged from
// GetLastError(), so the driver's EMSGSIZE, ESTALE, ... keep their names.
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <winsock2.h>
#include <windows.h>

#include <napi.h>

#include <string>

namespace ferry {

// The Linux errno for a Win32 error (0 if there is no good match).
int ErrnoFromWin32(DWORD err);

// Builds the error (see above).  hr: an HRESULT when err is 0 (COM/VSS).
Napi::Error WinError(Napi::Env env, DWORD err, const char* syscall,
                     const std::string& label);
Napi::Error HresultError(Napi::Env env, long hr, const char* stage,
                         const std::string& label);

// UTF-8 -> UTF-16 for the W APIs.
std::wstring Widen(const std::string& s);
std::string Narrow(const std::wstring& s);

}  // namespace ferry
