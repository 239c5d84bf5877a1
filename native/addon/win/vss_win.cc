// An application-consistent tag through the VSS requester API.
//
// A requester cannot run code between the writers' freeze and thaw: VSS
// does freeze, snapshot and thaw inside DoSnapshotSet.  The freeze point
// is visible in the kernel though: VSS sends each volume
// IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES after the writers froze and the file
// system flushed, and ferryflt (above volsnap) sees it pass.  So:
//
//   1. arm the driver: "tag <id> at the next freeze point of these devices"
//      (FERRY_WIN_IOC_VSS_ARM; the arm expires by itself at the deadline)
//   2. run a VSS backup of the volumes (writers freeze / thaw around the
//      freeze point, where the driver inserts the TAG)
//   3. collect what the driver did (FERRY_WIN_IOC_VSS_RESULT: disarms)
//   4. delete the shadow copy unless asked to keep it
//
// Every VSS wait is bounded by the caller's deadline: on timeout the
// asynchronous call is cancelled and the backup aborted (writers thaw).
// Whatever fails, the backup is aborted or completed, the arm is collected
// and every COM object is released.
#include <winsock2.h>
#include <windows.h>
#include <objbase.h>
#include <vss.h>
#include <vswriter.h>
#include <vsbackup.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "args.h"
#include "errors.h"
#include "ferry_errno.h"
#include "ferry_winioctl.h"
#include "register_win.h"
#include "win_io.h"

namespace ferry {

namespace {

struct VssParams {
  HANDLE ctl;
  std::vector<std::wstring> volumes;  // "E:\", "\\?\Volume{...}\"
  std::vector<uint32_t> devices;      // ferryflt device indexes
  uint64_t tag_id;
  uint32_t hold_ms;
  uint32_t timeout_ms;
  bool keep;
};

struct VssOutcome {
  // failure: a VSS stage (hr) or a driver call (win_error)
  const char* stage = nullptr;
  HRESULT hr = S_OK;
  DWORD win_error = 0;
  ferry_win_vss_result result = {};
  std::string set_id;
  std::vector<std::string> snapshot_devices;
};

std::string GuidString(const GUID& g) {
  wchar_t buf[64];
  int n = StringFromGUID2(g, buf, 64);
  return n > 0 ? Narrow(std::wstring(buf, static_cast<size_t>(n - 1))) : std::string();
}

// Waits for an asynchronous VSS call until the deadline (GetTickCount64).
HRESULT WaitAsync(IVssAsync* async, ULONGLONG deadline) {
  for (;;) {
    HRESULT status = S_OK;
    HRESULT hr = async->QueryStatus(&status, nullptr);
    if (FAILED(hr)) return hr;
    if (status != VSS_S_ASYNC_PENDING)
      return status == VSS_S_ASYNC_FINISHED ? S_OK : status;
    if (GetTickCount64() >= deadline) {
      async->Cancel();
      return HRESULT_FROM_WIN32(ERROR_TIMEOUT);
    }
    async->Wait(50);
  }
}

// Runs one asynchronous call to completion (or the deadline).
template <typename Start>
HRESULT RunAsync(Start start, ULONGLONG deadline) {
  IVssAsync* async = nullptr;
  HRESULT hr = start(&async);
  if (SUCCEEDED(hr) && async != nullptr) {
    hr = WaitAsync(async, deadline);
    async->Release();
  }
  return hr;
}

// COM security for VSS callbacks, once per process; later calls (or a
// host that set it up already) get RPC_E_TOO_LATE, which is fine.
void InitComSecurity() {
  static std::once_flag once;
  std::call_once(once, [] {
    CoInitializeSecurity(nullptr, -1, nullptr, nullptr, RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
                         RPC_C_IMP_LEVEL_IDENTIFY, nullptr, EOAC_DYNAMIC_CLOAKING, nullptr);
  });
}

DWORD VssResult(HANDLE ctl, ferry_win_vss_result* out) {
  std::memset(out, 0, sizeof(*out));
  out->size = sizeof(*out);
  out->version = FERRY_ABI_VERSION;
  return Ioctl(ctl, FERRY_WIN_IOC_VSS_RESULT, out, sizeof(*out), out, sizeof(*out)).error;
}

// The backup itself; bc is released by the caller.
void RunBackup(IVssBackupComponents* bc, const VssParams& p, ULONGLONG deadline,
               VssOutcome* out) {
  GUID set_id = GUID_NULL;
  std::vector<GUID> snaps;
  bool set_started = false, snapshot_done = false, armed = false;
  HRESULT hr;

  auto fail = [out](const char* stage, HRESULT h) {
    out->stage = stage;
    out->hr = h;
  };

  if (FAILED(hr = bc->InitializeForBackup(nullptr))) return fail("InitializeForBackup", hr);
  if (FAILED(hr = bc->SetContext(p.keep ? VSS_CTX_APP_ROLLBACK : VSS_CTX_BACKUP)))
    return fail("SetContext", hr);
  // a copy backup: writers keep their logs (no truncation)
  if (FAILED(hr = bc->SetBackupState(false, false, VSS_BT_COPY, false)))
    return fail("SetBackupState", hr);
  hr = RunAsync([bc](IVssAsync** a) { return bc->GatherWriterMetadata(a); }, deadline);
  if (FAILED(hr)) return fail("GatherWriterMetadata", hr);
  if (FAILED(hr = bc->StartSnapshotSet(&set_id))) return fail("StartSnapshotSet", hr);
  set_started = true;
  out->set_id = GuidString(set_id);
  for (const std::wstring& vol : p.volumes) {
    GUID snap = GUID_NULL;
    hr = bc->AddToSnapshotSet(const_cast<wchar_t*>(vol.c_str()), GUID_NULL, &snap);
    if (FAILED(hr)) break;
    snaps.push_back(snap);
  }
  if (FAILED(hr)) {
    fail("AddToSnapshotSet", hr);
  } else if (FAILED(hr = RunAsync([bc](IVssAsync** a) { return bc->PrepareForBackup(a); },
                                  deadline))) {
    fail("PrepareForBackup", hr);
  } else {
    // arm the driver for the freeze point, expiring at our deadline
    ferry_win_vss_arm arm = {};
    arm.size = sizeof(arm);
    arm.version = FERRY_ABI_VERSION;
    arm.tag_id = p.tag_id;
    arm.hold_ms = p.hold_ms;
    ULONGLONG now = GetTickCount64();
    arm.expire_ms = static_cast<uint32_t>(deadline > now ? deadline - now : 1);
    arm.ndevs = static_cast<uint32_t>(p.devices.size());
    for (size_t i = 0; i < p.devices.size(); i++) arm.devs[i] = p.devices[i];
    DWORD err = Ioctl(p.ctl, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), nullptr, 0).error;
    if (err != 0) {
      out->stage = "FERRY_WIN_IOC_VSS_ARM";
      out->win_error = err;
    } else {
      armed = true;
      hr = RunAsync([bc](IVssAsync** a) { return bc->DoSnapshotSet(a); }, deadline);
      if (FAILED(hr))
        fail("DoSnapshotSet", hr);
      else
        snapshot_done = true;
    }
  }

  // collect (and end) the arm whatever happened
  if (armed) {
    DWORD err = VssResult(p.ctl, &out->result);
    if (err != 0 && out->stage == nullptr) {
      out->stage = "FERRY_WIN_IOC_VSS_RESULT";
      out->win_error = err;
    }
  }
  if (!snapshot_done) {
    if (set_started) bc->AbortBackup();  // writers thaw, nothing kept
    return;
  }
  // tell the writers the (copy) backup is over; failure here loses nothing
  RunAsync([bc](IVssAsync** a) { return bc->BackupComplete(a); }, deadline + 10000);
  if (p.keep && out->stage == nullptr) {
    for (const GUID& snap : snaps) {
      VSS_SNAPSHOT_PROP prop;
      if (SUCCEEDED(bc->GetSnapshotProperties(snap, &prop))) {
        out->snapshot_devices.push_back(
            prop.m_pwszSnapshotDeviceObject ? Narrow(prop.m_pwszSnapshotDeviceObject) : "");
        VssFreeSnapshotProperties(&prop);
      }
    }
    return;
  }
  LONG deleted = 0;
  VSS_ID bad = GUID_NULL;
  bc->DeleteSnapshots(set_id, VSS_OBJECT_SNAPSHOT_SET, TRUE, &deleted, &bad);
}

void RunVssTag(const VssParams& p, VssOutcome* out) {
  ULONGLONG deadline = GetTickCount64() + p.timeout_ms;
  HRESULT init = CoInitializeEx(nullptr, COINIT_MULTITHREADED);
  if (FAILED(init) && init != RPC_E_CHANGED_MODE) {
    out->stage = "CoInitializeEx";
    out->hr = init;
    return;
  }
  InitComSecurity();
  IVssBackupComponents* bc = nullptr;
  HRESULT hr = CreateVssBackupComponents(&bc);
  if (FAILED(hr)) {
    out->stage = "CreateVssBackupComponents";
    out->hr = hr;
  } else {
    RunBackup(bc, p, deadline, out);
    bc->Release();
  }
  if (SUCCEEDED(init)) CoUninitialize();
}

const char* TagStatusName(uint32_t e) {
  switch (e) {
    case 0: return "ok";
    case FERRY_WIN_ENOENT: return "ENOENT";
    case FERRY_ETIMEDOUT: return "ETIMEDOUT";
    case FERRY_EAGAIN: return "EAGAIN";
    case FERRY_ENOSPC: return "ENOSPC";
    case FERRY_EBUSY: return "EBUSY";
    default: return "EIO";
  }
}

// vssTag(handle, volumes[], devices[], tagId, holdMs, timeoutMs, keepSnapshot)
Napi::Value VssTag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto p = std::make_shared<VssParams>();
  int fd;
  int64_t tag_id, hold_ms, timeout_ms;
  if (!ReadFd(info, 0, "fd", &fd)) return env.Undefined();
  p->ctl = NumberHandle(fd);
  if (!info[1].IsArray() || !info[2].IsArray()) {
    ThrowTypeError(env, "The \"volumes\" and \"devices\" arguments must be arrays");
    return env.Undefined();
  }
  Napi::Array vols = info[1].As<Napi::Array>();
  Napi::Array devs = info[2].As<Napi::Array>();
  if (vols.Length() == 0 || devs.Length() == 0 || devs.Length() > FERRY_MAX_DEVICES ||
      vols.Length() > FERRY_MAX_DEVICES) {
    ThrowRangeError(env, "vssTag needs 1 to 64 volumes and 1 to 64 devices");
    return env.Undefined();
  }
  for (uint32_t i = 0; i < vols.Length(); i++) {
    Napi::Value v = vols.Get(i);
    if (!v.IsString() || v.As<Napi::String>().Utf8Value().empty()) {
      ThrowTypeError(env, "The \"volumes\" argument must hold volume paths such as \"E:\\\\\"");
      return env.Undefined();
    }
    std::wstring w = Widen(v.As<Napi::String>().Utf8Value());
    if (w.back() != L'\\') w.push_back(L'\\');  // VSS wants the trailing backslash
    p->volumes.push_back(w);
  }
  for (uint32_t i = 0; i < devs.Length(); i++) {
    Napi::Value v = devs.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d < FERRY_MAX_DEVICES && d == static_cast<double>(static_cast<int>(d)))) {
      ThrowTypeError(env, "The \"devices\" argument must hold device indexes (0 to 63)");
      return env.Undefined();
    }
    p->devices.push_back(static_cast<uint32_t>(d));
  }
  if (!ReadOffset(info, 3, "tagId", &tag_id) || !ReadOffset(info, 4, "holdMs", &hold_ms) ||
      !ReadOffset(info, 5, "timeoutMs", &timeout_ms) || !ReadBool(info, 6, "keepSnapshot", &p->keep))
    return env.Undefined();
  if (hold_ms > FERRY_WIN_TAG_HOLD_MAX_MS || timeout_ms < 1000 || timeout_ms > 600000) {
    ThrowRangeError(env, "vssTag: holdMs must be <= 5000 and timeoutMs within 1000..600000");
    return env.Undefined();
  }
  p->tag_id = static_cast<uint64_t>(tag_id);
  p->hold_ms = static_cast<uint32_t>(hold_ms);
  p->timeout_ms = static_cast<uint32_t>(timeout_ms);

  auto out = std::make_shared<VssOutcome>();
  auto* w = new WinWorker(
      env, "vssTag",
      [p, out](const char** syscall) -> DWORD {
        RunVssTag(*p, out.get());
        *syscall = out->stage != nullptr ? out->stage : "vssTag";
        // VSS failures are reported by the result builder (HRESULT)
        return out->win_error;
      },
      [out](Napi::Env e) -> Napi::Value {
        if (out->stage != nullptr && out->win_error == 0) {
          HresultError(e, out->hr, out->stage, "vssTag").ThrowAsJavaScriptException();
          return e.Undefined();
        }
        const ferry_win_vss_result& r = out->result;
        Napi::Object o = Napi::Object::New(e);
        Napi::Array seqs = Napi::Array::New(e, r.ndevs);
        Napi::Array status = Napi::Array::New(e, r.ndevs);
        Napi::Array bridged = Napi::Array::New(e, r.ndevs);
        for (uint32_t i = 0; i < r.ndevs && i < FERRY_MAX_DEVICES; i++) {
          seqs.Set(i, static_cast<double>(r.seqs[i]));
          status.Set(i, TagStatusName(r.status[i]));
          bridged.Set(i, Napi::Boolean::New(e, (r.bridged >> i) & 1));
        }
        o.Set("tagId", static_cast<double>(r.tag_id));
        o.Set("seqs", seqs);
        o.Set("status", status);
        o.Set("bridged", bridged);
        o.Set("holdNs", static_cast<double>(r.hold_ns));
        o.Set("snapshotSetId", out->set_id);
        Napi::Array snaps = Napi::Array::New(e, out->snapshot_devices.size());
        for (size_t i = 0; i < out->snapshot_devices.size(); i++)
          snaps.Set(static_cast<uint32_t>(i), out->snapshot_devices[i]);
        o.Set("snapshotDevices", snaps);
        return o;
      });
  return w->Start();
}

}  // namespace

void RegisterVssWin(Napi::Env env, Napi::Object exports) {
  exports.Set("vssTag", Napi::Function::New(env, VssTag, "vssTag"));
}

}  // namespace ferry
