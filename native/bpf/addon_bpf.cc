// ferry_bpf: the eBPF write tracker's N-API addon (see native/addon/bpf.ts for
// the JS declaration). A separate addon from ferry_native so that ferry_native
// loads on machines without libbpf.
#include <napi.h>

#include <cstdio>
#include <memory>

#include "args.h"
#include "errors.h"
#include "ferry_trace.h"
#include "trace_handle.h"

namespace {

using ferry_bpf::TraceError;
using ferry_bpf::TraceHandle;

void ThrowTraceError(Napi::Env env, const TraceError& e) {
  Napi::Error error = Napi::Error::New(env, e.message);
  error.Set("code", e.err != 0 ? ferry::ErrnoName(e.err) : "ERR_FERRY_BPF");
  if (e.err != 0) error.Set("errno", static_cast<double>(e.err));
  if (!e.syscall.empty()) error.Set("syscall", e.syscall);
  error.Set("reason", e.reason);
  error.ThrowAsJavaScriptException();
}

class BpfTracker : public Napi::ObjectWrap<BpfTracker> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "BpfTracker",
        {
            InstanceMethod<&BpfTracker::Track>("track"),
            InstanceMethod<&BpfTracker::Untrack>("untrack"),
            InstanceMethod<&BpfTracker::Tracked>("tracked"),
            InstanceMethod<&BpfTracker::Drain>("drain"),
            InstanceMethod<&BpfTracker::TakeBitmap>("takeBitmap"),
            InstanceMethod<&BpfTracker::Counters>("counters"),
            InstanceMethod<&BpfTracker::Close>("close"),
            InstanceAccessor<&BpfTracker::InstanceId>("instanceId"),
            InstanceAccessor<&BpfTracker::Reused>("reused"),
            InstanceAccessor<&BpfTracker::RingBytes>("ringBytes"),
        });
  }

  // new BpfTracker(pinDir, objectPath, ringBytes): loads or reuses the program.
  explicit BpfTracker(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<BpfTracker>(info) {
    std::string pin_dir, object_path;
    uint32_t ring_bytes = 0;
    if (!ferry::ReadPath(info, 0, "pinDir", &pin_dir) ||
        !ferry::ReadPath(info, 1, "objectPath", &object_path) ||
        !ferry::ReadU32(info, 2, "ringBytes", &ring_bytes)) {
      return;
    }
    if (ring_bytes < 4096 || (ring_bytes & (ring_bytes - 1)) != 0) {
      ferry::ThrowRangeError(info.Env(),
                             "ringBytes must be a power of two >= 4096, got " +
                                 std::to_string(ring_bytes));
      return;
    }
    TraceError err;
    if (!handle_.Open(pin_dir, object_path, ring_bytes, &err)) {
      ThrowTraceError(info.Env(), err);
    }
  }

 private:
  Napi::Value Track(const Napi::CallbackInfo& info) {
    uint32_t major, minor, chunk_shift;
    uint64_t size_bytes;
    if (!ferry::ReadU32(info, 0, "major", &major) ||
        !ferry::ReadU32(info, 1, "minor", &minor) ||
        !ferry::ReadU32(info, 2, "chunkShift", &chunk_shift) ||
        !ferry::ReadU64(info, 3, "sizeBytes", &size_bytes)) {
      return info.Env().Undefined();
    }
    uint32_t slot = 0;
    TraceError err;
    if (!handle_.Track(major, minor, chunk_shift, size_bytes, &slot, &err)) {
      ThrowTraceError(info.Env(), err);
      return info.Env().Undefined();
    }
    return Napi::Number::New(info.Env(), slot);
  }

  Napi::Value Untrack(const Napi::CallbackInfo& info) {
    uint32_t slot;
    if (!ferry::ReadU32(info, 0, "slot", &slot)) return info.Env().Undefined();
    TraceError err;
    if (!handle_.Untrack(slot, &err)) ThrowTraceError(info.Env(), err);
    return info.Env().Undefined();
  }

  Napi::Value Tracked(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<ferry_bpf::TrackedDiskInfo> disks;
    TraceError err;
    if (!handle_.Tracked(&disks, &err)) {
      ThrowTraceError(env, err);
      return env.Undefined();
    }
    Napi::Array out = Napi::Array::New(env, disks.size());
    for (size_t i = 0; i < disks.size(); i++) {
      Napi::Object d = Napi::Object::New(env);
      d.Set("slot", static_cast<double>(disks[i].slot));
      d.Set("major", static_cast<double>(disks[i].major));
      d.Set("minor", static_cast<double>(disks[i].minor));
      d.Set("chunkShift", static_cast<double>(disks[i].chunk_shift));
      d.Set("sizeBytes", static_cast<double>(disks[i].size_bytes));
      out.Set(static_cast<uint32_t>(i), d);
    }
    return out;
  }

  Napi::Value Drain(const Napi::CallbackInfo& info) {
    uint32_t max_events;
    if (!ferry::ReadU32(info, 0, "maxEvents", &max_events)) {
      return info.Env().Undefined();
    }
    std::vector<uint8_t> bytes;
    TraceError err;
    if (!handle_.Drain(max_events, &bytes, &err)) {
      ThrowTraceError(info.Env(), err);
      return info.Env().Undefined();
    }
    return Napi::Buffer<uint8_t>::Copy(info.Env(), bytes.data(), bytes.size());
  }

  Napi::Value TakeBitmap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t slot;
    if (!ferry::ReadU32(info, 0, "slot", &slot)) return env.Undefined();
    ferry_bpf::BitmapTakeResult take;
    TraceError err;
    if (!handle_.TakeBitmap(slot, &take, &err)) {
      ThrowTraceError(env, err);
      return env.Undefined();
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("bits",
            Napi::Buffer<uint8_t>::Copy(env, take.bits.data(), take.bits.size()));
    out.Set("nbits", static_cast<double>(take.nbits));
    out.Set("chunkShift", static_cast<double>(take.chunk_shift));
    out.Set("dirty", static_cast<double>(take.dirty));
    return out;
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ferry_bpf::Counters c;
    TraceError err;
    if (!handle_.ReadCounters(&c, &err)) {
      ThrowTraceError(env, err);
      return env.Undefined();
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("events", static_cast<double>(c.events));
    out.Set("overflowed", static_cast<double>(c.overflowed));
    out.Set("lost", static_cast<double>(c.lost));
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    bool unload = false;
    if (!ferry::ReadBool(info, 0, "unload", &unload)) {
      return info.Env().Undefined();
    }
    TraceError err;
    if (!handle_.Close(unload, &err)) ThrowTraceError(info.Env(), err);
    return info.Env().Undefined();
  }

  Napi::Value InstanceId(const Napi::CallbackInfo& info) {
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016llx",
                  static_cast<unsigned long long>(handle_.instance_id()));
    return Napi::String::New(info.Env(), hex);
  }

  Napi::Value Reused(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), handle_.reused());
  }

  Napi::Value RingBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), handle_.ring_bytes());
  }

  TraceHandle handle_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = BpfTracker::Define(env);
  auto* ref = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.SetInstanceData(ref);

  // open(pinDir, objectPath, ringBytes): a BpfTracker, or throws.
  exports.Set("open", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    Napi::Env e = info.Env();
    auto* constructor = e.GetInstanceData<Napi::FunctionReference>();
    std::vector<napi_value> args;
    for (size_t i = 0; i < info.Length(); i++) args.push_back(info[i]);
    Napi::Object obj = constructor->New(args);
    if (e.IsExceptionPending()) return e.Undefined();
    return obj;
  }));
  exports.Set("abiVersion", Napi::Number::New(env, FERRY_TRACE_ABI));
  exports.Set("eventBytes",
              Napi::Number::New(env, sizeof(ferry_trace_event)));
  exports.Set("maxSlots", Napi::Number::New(env, FERRY_TRACE_MAX_SLOTS));
  exports.Set("bitmapPoolBits",
              Napi::Number::New(env, 64.0 * FERRY_TRACE_BITMAP_WORDS));
  return exports;
}

}  // namespace

NODE_API_MODULE(ferry_bpf, Init)
