// Loading the write tracker's BPF object and pinning it in bpffs, or finding
// the one a previous process pinned (so that tracking survives an agent
// restart). The pin directory holds one file per map and the program's link.
#pragma once

#include <cstdint>
#include <string>

#include "ferry_trace.h"
#include "trace_error.h"

namespace ferry_bpf {

// File descriptors of the pinned maps, owned by the caller once returned.
struct PinnedMaps {
  int ring = -1;
  int disks = -1;
  int bitmap = -1;
  int full = -1;
  int counters = -1;
  int meta = -1;
};

struct OpenedTracker {
  PinnedMaps maps;
  ferry_trace_meta meta{};
  bool reused = false;
};

// Mounts bpffs at /sys/fs/bpf when the pin directory lies under it and it is
// not mounted, creates the directory, then reuses what is pinned there when its
// ABI matches (else unpins it) or loads `object_path` and pins it.
bool OpenTracker(const std::string& pin_dir, const std::string& object_path,
                 uint32_t ring_bytes, OpenedTracker* out, TraceError* err);

// Removes every pin under pin_dir and the directory: the program detaches
// once no process holds it. A missing directory is not an error.
bool UnpinAll(const std::string& pin_dir, TraceError* err);

// After an unload: removes the pin directory's parent (the lock anchor) when
// nothing else lives there.
void RemoveParentIfEmpty(const std::string& pin_dir);

void ClosePinnedMaps(PinnedMaps* maps);

// flock(LOCK_EX) on the pin directory's parent, which outlives load and unpin:
// serializes loaders and track/untrack across processes.
class PinLock {
 public:
  explicit PinLock(const std::string& pin_dir);
  ~PinLock();
  PinLock(const PinLock&) = delete;
  PinLock& operator=(const PinLock&) = delete;
  bool Acquire(TraceError* err);

 private:
  std::string dir_;
  int fd_ = -1;
};

}  // namespace ferry_bpf
