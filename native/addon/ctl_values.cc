#include "ctl_values.h"

#include <cmath>
#include <string>

#include "args.h"
#include "errors.h"

namespace ferry {

namespace {

// The device indexes in info[index] into devs; empty only if allowed.
bool ReadDevices(const Napi::CallbackInfo& info, size_t index, bool allow_empty,
                 uint32_t* devs, uint32_t* ndevs) {
  Napi::Env env = info.Env();
  if (!info[index].IsArray()) {
    ThrowTypeError(env, "The \"devices\" argument must be an array of device indexes");
    return false;
  }
  Napi::Array list = info[index].As<Napi::Array>();
  if ((list.Length() == 0 && !allow_empty) || list.Length() > FERRY_MAX_DEVICES) {
    ThrowRangeError(env, "The \"devices\" argument must list 1 to " +
                             std::to_string(FERRY_MAX_DEVICES) + " devices");
    return false;
  }
  *ndevs = list.Length();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= UINT32_MAX && d == std::floor(d))) {
      ThrowTypeError(env, "The \"devices\" argument must hold device indexes (integers >= 0)");
      return false;
    }
    devs[i] = static_cast<uint32_t>(d);
  }
  return true;
}

}  // namespace

bool ReadTagArgs(const Napi::CallbackInfo& info, size_t first,
                 ferry_ioc_tag* arg) {
  Napi::Env env = info.Env();
  if (!ReadU32(info, first + 1, "holdMs", &arg->hold_ms) ||
      !ReadU64(info, first + 2, "tagId", &arg->tag_id))
    return false;
  if (!info[first + 3].IsUndefined() &&
      !ReadU64(info, first + 3, "holdId", &arg->hold_id))
    return false;
  if (!ReadDevices(info, first, arg->hold_id != 0, arg->devs, &arg->ndevs))
    return false;
  if (arg->hold_id != 0 && (arg->ndevs != 0 || arg->hold_ms != 0)) {
    ThrowRangeError(env, "A tag at a hold's cut takes the hold's devices and bound: pass no devices and holdMs 0");
    return false;
  }
  return true;
}

bool ReadHoldArgs(const Napi::CallbackInfo& info, size_t first,
                  ferry_ioc_hold* arg) {
  return ReadU32(info, first + 1, "holdMs", &arg->hold_ms) &&
         ReadDevices(info, first, false, arg->devs, &arg->ndevs);
}

Napi::Object VersionObject(Napi::Env env, const ferry_ioc_version& v) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("abiVersion", v.abi_version);
  o.Set("maxDevices", v.max_devices);
  o.Set("batchHeaderSize", v.batch_hdr_size);
  o.Set("recordHeaderSize", v.rec_hdr_size);
  o.Set("devInfoSize", v.dev_info_size);
  o.Set("maxTagHoldMs", v.max_tag_hold_ms);
  o.Set("moduleVersion",
        Napi::String::New(env, v.module_version,
                          strnlen(v.module_version, sizeof(v.module_version))));
  return o;
}

Napi::Object DevInfoObject(Napi::Env env, const ferry_dev_info& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", Napi::String::New(env, d.name, strnlen(d.name, sizeof(d.name))));
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
  c.Set("overlaps", Num(d.overlaps));
  c.Set("overlapDirty", Num(d.overlap_dirty));
  o.Set("counters", c);
  return o;
}

Napi::Object GetChangesObject(Napi::Env env, const ferry_ioc_get& g) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("batchId", Num(g.batch_id));
  o.Set("nrecords", g.nrecords);
  o.Set("bytes", Num(g.bytes));
  o.Set("batchFlags", g.batch_flags);
  return o;
}

Napi::Object TagObject(Napi::Env env, const ferry_ioc_tag& t) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array seqs = Napi::Array::New(env, t.ndevs);
  for (uint32_t i = 0; i < t.ndevs; i++) seqs.Set(i, Num(t.seqs[i]));
  Napi::Array devices = Napi::Array::New(env, t.ndevs);
  for (uint32_t i = 0; i < t.ndevs; i++) devices.Set(i, t.devs[i]);
  o.Set("seqs", seqs);
  o.Set("devices", devices);
  o.Set("holdNs", Num(t.hold_ns));
  return o;
}

Napi::Object HoldObject(Napi::Env env, const ferry_ioc_hold& h) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("holdId", Num(h.hold_id));
  o.Set("drainNs", Num(h.drain_ns));
  return o;
}

Napi::Object ReleaseObject(Napi::Env env, const ferry_ioc_release& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("heldNs", Num(r.held_ns));
  return o;
}

Napi::Object StatsObject(Napi::Env env, const ferry_ioc_stats& s) {
  const ferry_global_stats& g = s.global;
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
  Napi::Object holds = Napi::Object::New(env);
  holds.Set("ok", Num(s.holds.holds_ok));
  holds.Set("expired", Num(s.holds.holds_expired));
  holds.Set("aborted", Num(s.holds.holds_aborted));
  holds.Set("maxNs", Num(s.holds.hold_max_ns));
  o.Set("holds", holds);
  o.Set("device", s.dev_index == FERRY_DEV_NONE
                      ? env.Null()
                      : Napi::Value(DevInfoObject(env, s.dev)));
  return o;
}

Napi::Object BitmapObject(Napi::Env env, const ferry_ioc_bitmap& b) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("returned", b.returned);
  o.Set("granularity", b.granularity);
  o.Set("nbits", Num(b.nbits));
  o.Set("dirtyBits", Num(b.dirty_bits));
  o.Set("epoch", Num(b.epoch));
  o.Set("cutSeq", Num(b.cut_seq));
  return o;
}

}  // namespace ferry
