// One process's handle on the pinned write tracker: its maps, the ring buffer
// reader and the mmapped dirty bitmaps. Not thread-safe (the JS thread owns it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trace_error.h"
#include "trace_pins.h"

struct ring_buffer;

namespace ferry_bpf {

struct TrackedDiskInfo {
  uint32_t slot;
  uint32_t major;
  uint32_t minor;
  uint32_t chunk_shift;
  uint64_t size_bytes;
};

struct BitmapTakeResult {
  std::vector<uint8_t> bits;  // ceil(nbits / 8) bytes, bit i = byte i/8, 1 << i%8
  uint64_t nbits = 0;
  uint32_t chunk_shift = 0;
  uint64_t dirty = 0;
};

struct Counters {
  uint64_t events = 0;
  uint64_t overflowed = 0;
  uint64_t lost = 0;
};

class TraceHandle {
 public:
  TraceHandle() = default;
  ~TraceHandle();
  TraceHandle(const TraceHandle&) = delete;
  TraceHandle& operator=(const TraceHandle&) = delete;

  bool Open(const std::string& pin_dir, const std::string& object_path,
            uint32_t ring_bytes, TraceError* err);

  bool Track(uint32_t major, uint32_t minor, uint32_t chunk_shift,
             uint64_t size_bytes, uint32_t* slot, TraceError* err);
  bool Untrack(uint32_t slot, TraceError* err);
  bool Tracked(std::vector<TrackedDiskInfo>* out, TraceError* err);
  // Appends up to max_events packed ferry_trace_event records to *out.
  bool Drain(uint32_t max_events, std::vector<uint8_t>* out, TraceError* err);
  bool TakeBitmap(uint32_t slot, BitmapTakeResult* out, TraceError* err);
  bool ReadCounters(Counters* out, TraceError* err);
  // Releases this process's handles; with unload also unpins everything.
  bool Close(bool unload, TraceError* err);

  bool open() const { return open_; }
  bool reused() const { return opened_.reused; }
  uint64_t instance_id() const { return opened_.meta.instance_id; }
  uint32_t ring_bytes() const { return opened_.meta.ring_bytes; }

 private:
  struct DiskEntry {
    uint32_t key;
    ferry_trace_disk value;
  };
  struct DrainState {
    std::vector<uint8_t>* out;
    uint32_t taken;
    uint32_t max;
    bool full;
  };

  static int OnSample(void* ctx, void* data, size_t size);
  bool RequireOpen(TraceError* err) const;
  bool ListDisks(std::vector<DiskEntry>* out, TraceError* err) const;
  void ClearSlotBits(const ferry_trace_disk& disk);
  void ReleaseResources();

  std::string pin_dir_;
  OpenedTracker opened_;
  ring_buffer* ring_ = nullptr;
  uint64_t* bitmap_ = nullptr;
  size_t bitmap_len_ = 0;
  uint64_t* full_ = nullptr;
  size_t full_len_ = 0;
  DrainState drain_{};
  bool open_ = false;
};

}  // namespace ferry_bpf
