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
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
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

template <typename T>
void InitArg(T* arg) {
  std::memset(arg, 0, sizeof(*arg));
  arg->size = sizeof(T);
  arg->version = FERRY_ABI_VERSION;
}

double Num(uint64_t v) { return static_cast<double>(v); }

// ---- argument readers (leave a pending JS exception and return false) ----

bool ReadU32(const Napi::CallbackInfo& info, size_t index, const char* name,
             uint32_t* out) {
  int64_t value;
  if (!ReadOffset(info, index, name, &value)) return false;
  if (value > UINT32_MAX) {
    ThrowRangeError(info.Env(), std::string("The \"") + name +
                                    "\" argument must be <= 4294967295");
    return false;
  }
  *out = static_cast<uint32_t>(value);
  return true;
}

bool ReadU64(const Napi::CallbackInfo& info, size_t index, const char* name,
             uint64_t* out) {
  int64_t value;
  if (!ReadOffset(info, index, name, &value)) return false;
  *out = static_cast<uint64_t>(value);
  return true;
}

bool ReadBuffer(const Napi::CallbackInfo& info, size_t index, const char* name,
                Napi::Buffer<uint8_t>* out) {
  if (!info[index].IsBuffer()) {
    ThrowTypeError(info.Env(), std::string("The \"") + name +
                                   "\" argument must be a Buffer");
    return false;
  }
  *out = info[index].As<Napi::Buffer<uint8_t>>();
  return true;
}

// ---- result builders ----

Napi::Object DevInfoObject(Napi::Env env, const ferry_dev_info& d) {
  Napi::Object o = Napi::Object::New(env);
  size_t name_len = strnlen(d.name, sizeof(d.name));
  o.Set("name", Napi::String::New(env, d.name, name_len));
  o.Set("index", d.index);
  o.Set("mode", d.mode);
  o.Set("devMajor", d.dev_major);
  o.Set("devMinor", d.dev_minor);
  o.Set("dataMajor", d.data_major);
  o.Set("dataMinor", d.data_minor);
  o.Set("metaMajor", d.meta_major);
  o.Set("metaMinor", d.meta_minor);
  o.Set("sizeBytes", Num(d.size_bytes));
  o.Set("granularity", d.granularity);
  o.Set("startState", d.start_state);
  o.Set("generation", d.generation);
  o.Set("flags", d.flags);
  o.Set("firstSeq", Num(d.first_seq));
  o.Set("nextSeq", Num(d.next_seq));
  o.Set("committedSeq", Num(d.committed_seq));
  o.Set("seqLimit", Num(d.seq_limit));
  o.Set("bitmapBits", Num(d.bitmap_bits));
  o.Set("dirtyBits", Num(d.dirty_bits));
  o.Set("bitmapEpoch", Num(d.bitmap_epoch));
  o.Set("ringCapacity", d.ring_capacity);
  o.Set("ringUsed", d.ring_used);
  o.Set("ringHandedOut", d.ring_handed_out);
  o.Set("poolSize", d.pool_size);
  o.Set("poolUsed", d.pool_used);
  o.Set("inflight", d.inflight);
  Napi::Object c = Napi::Object::New(env);
  c.Set("writes", Num(d.writes));
  c.Set("writeBytes", Num(d.write_bytes));
  c.Set("dirtyRecords", Num(d.dirty_records));
  c.Set("discards", Num(d.discards));
  c.Set("flushes", Num(d.flushes));
  c.Set("tags", Num(d.tags));
  c.Set("resyncMarks", Num(d.resync_marks));
  c.Set("modeChanges", Num(d.mode_changes));
  c.Set("bitmapWrites", Num(d.bitmap_writes));
  c.Set("failedWrites", Num(d.failed_writes));
  c.Set("droppedFlushes", Num(d.dropped_flushes));
  c.Set("recordsCommitted", Num(d.records_committed));
  c.Set("bytesCommitted", Num(d.bytes_committed));
  o.Set("counters", c);
  return o;
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
      [arg](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("abiVersion", arg->abi_version);
        o.Set("maxDevices", arg->max_devices);
        o.Set("batchHeaderSize", arg->batch_hdr_size);
        o.Set("recordHeaderSize", arg->rec_hdr_size);
        o.Set("devInfoSize", arg->dev_info_size);
        o.Set("maxTagHoldMs", arg->max_tag_hold_ms);
        o.Set("moduleVersion",
              Napi::String::New(env, arg->module_version,
                                strnlen(arg->module_version,
                                        sizeof(arg->module_version))));
        return o;
      });
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
      [arg](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("batchId", Num(arg->batch_id));
        o.Set("nrecords", arg->nrecords);
        o.Set("bytes", Num(arg->bytes));
        o.Set("batchFlags", arg->batch_flags);
        return o;
      },
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
  uint32_t hold_ms;
  uint64_t tag_id;
  if (!ReadFd(info, 0, "fd", &fd)) return env.Undefined();
  if (!info[1].IsArray()) {
    ThrowTypeError(env, "The \"devices\" argument must be an array of device indexes");
    return env.Undefined();
  }
  if (!ReadU32(info, 2, "holdMs", &hold_ms) ||
      !ReadU64(info, 3, "tagId", &tag_id))
    return env.Undefined();
  Napi::Array devs = info[1].As<Napi::Array>();
  if (devs.Length() == 0 || devs.Length() > FERRY_MAX_DEVICES) {
    ThrowRangeError(env, "The \"devices\" argument must list 1 to " +
                             std::to_string(FERRY_MAX_DEVICES) + " devices");
    return env.Undefined();
  }
  auto arg = std::make_shared<ferry_ioc_tag>();
  InitArg(arg.get());
  arg->tag_id = tag_id;
  arg->hold_ms = hold_ms;
  arg->ndevs = devs.Length();
  for (uint32_t i = 0; i < devs.Length(); i++) {
    Napi::Value v = devs.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= UINT32_MAX && d == std::floor(d))) {
      ThrowTypeError(env, "The \"devices\" argument must hold device indexes (integers >= 0)");
      return env.Undefined();
    }
    arg->devs[i] = static_cast<uint32_t>(d);
  }
  auto* w = new CtlWorker(
      env, "ioctl(FERRY_IOC_TAG)",
      [fd, arg](const char**) { return Ioctl(fd, FERRY_IOC_TAG, arg.get()); },
      [arg](Napi::Env e) {
        Napi::Object o = Napi::Object::New(e);
        Napi::Array seqs = Napi::Array::New(e, arg->ndevs);
        for (uint32_t i = 0; i < arg->ndevs; i++) seqs.Set(i, Num(arg->seqs[i]));
        o.Set("seqs", seqs);
        o.Set("holdNs", Num(arg->hold_ns));
        return o;
      },
      [arg](Napi::Env, Napi::Error& error) {
        error.Set("holdNs", Num(arg->hold_ns));
      });
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
      [arg](Napi::Env env) {
        const ferry_global_stats& g = arg->global;
        Napi::Object o = Napi::Object::New(env);
        o.Set("ndevices", g.ndevices);
        o.Set("batchesInflight", g.batches_inflight);
        o.Set("consumerAttached", Napi::Boolean::New(env, g.consumer_attached != 0));
        o.Set("nextBatchId", Num(g.next_batch_id));
        o.Set("committedBatchId", Num(g.committed_batch_id));
        o.Set("gets", Num(g.gets));
        o.Set("commits", Num(g.commits));
        o.Set("resets", Num(g.resets));
        o.Set("tagsOk", Num(g.tags_ok));
        o.Set("tagsTimedOut", Num(g.tags_timed_out));
        o.Set("tagHoldLastNs", Num(g.tag_hold_last_ns));
        o.Set("tagHoldMaxNs", Num(g.tag_hold_max_ns));
        o.Set("device", arg->dev_index == FERRY_DEV_NONE
                            ? env.Null()
                            : Napi::Value(DevInfoObject(env, arg->dev)));
        return o;
      });
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
      [arg](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("returned", arg->returned);
        o.Set("granularity", arg->granularity);
        o.Set("nbits", Num(arg->nbits));
        o.Set("dirtyBits", Num(arg->dirty_bits));
        o.Set("epoch", Num(arg->epoch));
        o.Set("cutSeq", Num(arg->cut_seq));
        return o;
      });
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
  constants.Set("FERRY_ABI_VERSION", FERRY_ABI_VERSION);
  constants.Set("sizeofBatchHeader", static_cast<double>(sizeof(ferry_batch_hdr)));
  constants.Set("sizeofRecord", static_cast<double>(sizeof(ferry_rec)));
  constants.Set("sizeofDevInfo", static_cast<double>(sizeof(ferry_dev_info)));
  exports.Set("ctlConstants", constants);
}

}  // namespace ferry
