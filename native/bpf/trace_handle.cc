#include "trace_handle.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <endian.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace ferry_bpf {

namespace {

constexpr uint32_t kMinChunkShift = 9;
constexpr uint32_t kMaxChunkShift = 40;
constexpr int kStopDrain = -ECANCELED;

uint32_t DevKey(uint32_t major, uint32_t minor) {
  return (major << 20) | minor;
}

uint64_t DivRoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

size_t PageRound(size_t bytes) {
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return DivRoundUp(bytes, page) * page;
}

std::string ErrnoText(int err) {
  const char* desc = strerrordesc_np(err);
  return desc != nullptr ? desc : "Unknown error";
}

bool MapFail(TraceError* err, int e, const std::string& what) {
  const char* reason = e == EPERM || e == EACCES ? "permission" : "system";
  return Fail(err, e, "bpf", reason, what + ": " + ErrnoText(e));
}

// First fit of `nwords` bitmap words among the ranges in use; false if none.
bool PlaceWords(std::vector<std::pair<uint32_t, uint32_t>> used,
                uint32_t nwords, uint32_t* base) {
  std::sort(used.begin(), used.end());
  uint64_t next = 0;
  for (const auto& range : used) {
    if (range.first >= next + nwords) break;
    next = std::max<uint64_t>(next, uint64_t{range.first} + range.second);
  }
  if (next + nwords > FERRY_TRACE_BITMAP_WORDS) return false;
  *base = static_cast<uint32_t>(next);
  return true;
}

// The largest free run of words (to tell the caller which chunk size fits).
uint64_t LargestFreeRun(std::vector<std::pair<uint32_t, uint32_t>> used) {
  std::sort(used.begin(), used.end());
  uint64_t next = 0, best = 0;
  for (const auto& range : used) {
    if (range.first > next) best = std::max<uint64_t>(best, range.first - next);
    next = std::max<uint64_t>(next, uint64_t{range.first} + range.second);
  }
  return std::max<uint64_t>(best, FERRY_TRACE_BITMAP_WORDS - next);
}

void* MapArray(int fd, size_t bytes) {
  void* p = mmap(nullptr, PageRound(bytes), PROT_READ | PROT_WRITE, MAP_SHARED,
                 fd, 0);
  return p == MAP_FAILED ? nullptr : p;
}

}  // namespace

TraceHandle::~TraceHandle() { ReleaseResources(); }

void TraceHandle::ReleaseResources() {
  if (ring_ != nullptr) ring_buffer__free(ring_);
  ring_ = nullptr;
  if (bitmap_ != nullptr) munmap(bitmap_, PageRound(bitmap_len_));
  bitmap_ = nullptr;
  if (full_ != nullptr) munmap(full_, PageRound(full_len_));
  full_ = nullptr;
  ClosePinnedMaps(&opened_.maps);
  open_ = false;
}

bool TraceHandle::Open(const std::string& pin_dir,
                       const std::string& object_path, uint32_t ring_bytes,
                       TraceError* err) {
  if (!OpenTracker(pin_dir, object_path, ring_bytes, &opened_, err)) {
    return false;
  }
  pin_dir_ = pin_dir;
  bitmap_len_ = sizeof(uint64_t) * FERRY_TRACE_BITMAP_WORDS;
  full_len_ = sizeof(uint64_t) * FERRY_TRACE_MAX_SLOTS;
  bitmap_ = static_cast<uint64_t*>(MapArray(opened_.maps.bitmap, bitmap_len_));
  full_ = static_cast<uint64_t*>(MapArray(opened_.maps.full, full_len_));
  if (bitmap_ == nullptr || full_ == nullptr) {
    int e = errno;
    ReleaseResources();
    return Fail(err, e, "mmap", "system",
                "cannot map the dirty bitmap: " + ErrnoText(e));
  }
  ring_ = ring_buffer__new(opened_.maps.ring, OnSample, &drain_, nullptr);
  if (ring_ == nullptr) {
    int e = errno;
    ReleaseResources();
    return Fail(err, e, "mmap", "system",
                "cannot map the event ring: " + ErrnoText(e));
  }
  open_ = true;
  return true;
}

bool TraceHandle::RequireOpen(TraceError* err) const {
  if (open_) return true;
  return Fail(err, EBADF, nullptr, "closed", "the write tracker is closed");
}

bool TraceHandle::ListDisks(std::vector<DiskEntry>* out,
                            TraceError* err) const {
  out->clear();
  uint32_t key = 0;
  uint32_t* prev = nullptr;
  uint32_t next = 0;
  // A hash map never has more than max_entries keys; the bound guards a
  // concurrent delete restarting the walk forever.
  for (int i = 0; i < 4 * FERRY_TRACE_MAX_SLOTS; i++) {
    if (bpf_map_get_next_key(opened_.maps.disks, prev, &next) != 0) {
      if (errno == ENOENT) return true;
      return MapFail(err, errno, "cannot list the tracked disks");
    }
    key = next;
    prev = &key;
    DiskEntry entry{key, {}};
    if (bpf_map_lookup_elem(opened_.maps.disks, &key, &entry.value) != 0) {
      if (errno == ENOENT) continue;
      return MapFail(err, errno, "cannot read a tracked disk");
    }
    if (std::none_of(out->begin(), out->end(),
                     [&](const DiskEntry& e) { return e.key == key; })) {
      out->push_back(entry);
    }
  }
  return true;
}

void TraceHandle::ClearSlotBits(const ferry_trace_disk& disk) {
  for (uint32_t w = 0; w < disk.nwords; w++) {
    __atomic_store_n(&bitmap_[disk.word_base + w], 0, __ATOMIC_RELEASE);
  }
  __atomic_store_n(&full_[disk.slot], 0, __ATOMIC_RELEASE);
}

bool TraceHandle::Track(uint32_t major, uint32_t minor, uint32_t chunk_shift,
                        uint64_t size_bytes, uint32_t* slot, TraceError* err) {
  if (!RequireOpen(err)) return false;
  if (major >= (1u << 12) || minor >= (1u << 20)) {
    return Fail(err, EINVAL, nullptr, "geometry",
                "device number " + std::to_string(major) + ":" +
                    std::to_string(minor) + " is out of range");
  }
  if (chunk_shift < kMinChunkShift || chunk_shift > kMaxChunkShift) {
    return Fail(err, EINVAL, nullptr, "geometry",
                "chunkShift must be between 9 and 40, got " +
                    std::to_string(chunk_shift));
  }
  if (size_bytes == 0) {
    return Fail(err, EINVAL, nullptr, "geometry", "the disk's size is 0");
  }
  uint64_t nbits = DivRoundUp(size_bytes, uint64_t{1} << chunk_shift);
  uint64_t nwords = DivRoundUp(nbits, 64);

  PinLock lock(pin_dir_);
  if (!lock.Acquire(err)) return false;
  std::vector<DiskEntry> disks;
  if (!ListDisks(&disks, err)) return false;
  uint32_t key = DevKey(major, minor);
  std::vector<std::pair<uint32_t, uint32_t>> used;
  uint32_t slots_used = 0;
  for (const DiskEntry& d : disks) {
    if (d.key == key) {
      if (d.value.chunk_shift != chunk_shift ||
          d.value.size_bytes != size_bytes) {
        return Fail(err, EEXIST, nullptr, "geometry",
                    "disk " + std::to_string(major) + ":" +
                        std::to_string(minor) + " is tracked in slot " +
                        std::to_string(d.value.slot) +
                        " with another geometry (chunkShift " +
                        std::to_string(d.value.chunk_shift) + ", " +
                        std::to_string(d.value.size_bytes) +
                        " bytes): untrack it first");
      }
      *slot = d.value.slot;
      return true;
    }
    used.emplace_back(d.value.word_base, d.value.nwords);
    if (d.value.slot < 32) slots_used |= 1u << d.value.slot;
  }
  uint32_t free_slot = FERRY_TRACE_MAX_SLOTS;
  for (uint32_t s = 0; s < FERRY_TRACE_MAX_SLOTS; s++) {
    if ((slots_used & (1u << s)) == 0) {
      free_slot = s;
      break;
    }
  }
  if (free_slot == FERRY_TRACE_MAX_SLOTS) {
    return Fail(err, ENOSPC, nullptr, "slots",
                "the write tracker already tracks " +
                    std::to_string(FERRY_TRACE_MAX_SLOTS) + " disks");
  }
  uint32_t base = 0;
  if (nwords > FERRY_TRACE_BITMAP_WORDS ||
      !PlaceWords(used, static_cast<uint32_t>(nwords), &base)) {
    uint64_t room_bits = LargestFreeRun(used) * 64;
    uint32_t fit = chunk_shift;
    while (fit < kMaxChunkShift && DivRoundUp(size_bytes, uint64_t{1} << fit) > room_bits) fit++;
    return Fail(err, ENOSPC, nullptr, "bitmap-room",
                "the dirty-bitmap pool has room for " +
                    std::to_string(room_bits) + " more bits, the disk needs " +
                    std::to_string(nbits) + " at chunkShift " +
                    std::to_string(chunk_shift) + ": use chunkShift " +
                    std::to_string(fit) + " or more");
  }
  ferry_trace_disk value{};
  value.slot = free_slot;
  value.chunk_shift = chunk_shift;
  value.nbits = nbits;
  value.word_base = base;
  value.nwords = static_cast<uint32_t>(nwords);
  value.size_bytes = size_bytes;
  ClearSlotBits(value);
  if (bpf_map_update_elem(opened_.maps.disks, &key, &value, BPF_NOEXIST) != 0) {
    return MapFail(err, errno, "cannot add the disk to the tracked map");
  }
  *slot = free_slot;
  return true;
}

bool TraceHandle::Untrack(uint32_t slot, TraceError* err) {
  if (!RequireOpen(err)) return false;
  PinLock lock(pin_dir_);
  if (!lock.Acquire(err)) return false;
  std::vector<DiskEntry> disks;
  if (!ListDisks(&disks, err)) return false;
  for (const DiskEntry& d : disks) {
    if (d.value.slot != slot) continue;
    if (bpf_map_delete_elem(opened_.maps.disks, &d.key) != 0 &&
        errno != ENOENT) {
      return MapFail(err, errno, "cannot remove the disk from the tracked map");
    }
    ClearSlotBits(d.value);
    return true;
  }
  return Fail(err, ENOENT, nullptr, "not-tracked",
              "slot " + std::to_string(slot) + " is not tracked");
}

bool TraceHandle::Tracked(std::vector<TrackedDiskInfo>* out, TraceError* err) {
  if (!RequireOpen(err)) return false;
  std::vector<DiskEntry> disks;
  if (!ListDisks(&disks, err)) return false;
  out->clear();
  for (const DiskEntry& d : disks) {
    out->push_back({d.value.slot, d.key >> 20, d.key & ((1u << 20) - 1),
                    d.value.chunk_shift, d.value.size_bytes});
  }
  std::sort(out->begin(), out->end(),
            [](const TrackedDiskInfo& a, const TrackedDiskInfo& b) {
              return a.slot < b.slot;
            });
  return true;
}

int TraceHandle::OnSample(void* ctx, void* data, size_t size) {
  DrainState* st = static_cast<DrainState*>(ctx);
  if (size == sizeof(ferry_trace_event)) {
    const uint8_t* bytes = static_cast<const uint8_t*>(data);
    st->out->insert(st->out->end(), bytes, bytes + size);
    st->taken++;
  }
  if (st->taken >= st->max) {
    st->full = true;
    return kStopDrain;  // libbpf has already consumed this sample
  }
  return 0;
}

bool TraceHandle::Drain(uint32_t max_events, std::vector<uint8_t>* out,
                        TraceError* err) {
  if (!RequireOpen(err)) return false;
  out->clear();
  if (max_events == 0) return true;
  out->reserve(std::min<size_t>(max_events, 65536) * sizeof(ferry_trace_event));
  drain_ = DrainState{out, 0, max_events, false};
  int rc = ring_buffer__consume(ring_);
  bool stopped = drain_.full;
  drain_ = DrainState{};
  if (rc < 0 && !(stopped && rc == kStopDrain)) {
    return Fail(err, -rc, "epoll_wait", "system",
                "cannot read the event ring: " + ErrnoText(-rc));
  }
  return true;
}

bool TraceHandle::TakeBitmap(uint32_t slot, BitmapTakeResult* out,
                             TraceError* err) {
  if (!RequireOpen(err)) return false;
  std::vector<DiskEntry> disks;
  if (!ListDisks(&disks, err)) return false;
  const DiskEntry* found = nullptr;
  for (const DiskEntry& d : disks) {
    if (d.value.slot == slot) found = &d;
  }
  if (found == nullptr) {
    return Fail(err, ENOENT, nullptr, "not-tracked",
                "slot " + std::to_string(slot) + " is not tracked");
  }
  const ferry_trace_disk& disk = found->value;
  out->nbits = disk.nbits;
  out->chunk_shift = disk.chunk_shift;
  out->bits.assign(static_cast<size_t>(disk.nwords) * 8, 0);
  bool all = __atomic_exchange_n(&full_[disk.slot], 0, __ATOMIC_ACQ_REL) != 0;
  for (uint32_t w = 0; w < disk.nwords; w++) {
    uint64_t v = __atomic_exchange_n(&bitmap_[disk.word_base + w], 0,
                                     __ATOMIC_ACQ_REL);
    if (all) v = ~uint64_t{0};
    uint64_t le = htole64(v);
    memcpy(&out->bits[static_cast<size_t>(w) * 8], &le, 8);
  }
  out->bits.resize(static_cast<size_t>(DivRoundUp(disk.nbits, 8)));
  if (disk.nbits % 8 != 0) {
    out->bits.back() &= static_cast<uint8_t>((1u << (disk.nbits % 8)) - 1);
  }
  out->dirty = 0;
  for (uint8_t b : out->bits) out->dirty += __builtin_popcount(b);
  return true;
}

bool TraceHandle::ReadCounters(Counters* out, TraceError* err) {
  if (!RequireOpen(err)) return false;
  int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) {
    return Fail(err, -ncpus, nullptr, "system",
                "cannot count the possible CPUs");
  }
  std::vector<uint64_t> values(static_cast<size_t>(ncpus));
  uint64_t sums[FERRY_CNT_MAX] = {};
  for (uint32_t i = 0; i < FERRY_CNT_MAX; i++) {
    if (bpf_map_lookup_elem(opened_.maps.counters, &i, values.data()) != 0) {
      return MapFail(err, errno, "cannot read the tracker's counters");
    }
    for (uint64_t v : values) sums[i] += v;
  }
  out->events = sums[FERRY_CNT_EVENTS];
  out->overflowed = sums[FERRY_CNT_OVERFLOWED];
  out->lost = sums[FERRY_CNT_LOST];
  return true;
}

bool TraceHandle::Close(bool unload, TraceError* err) {
  ReleaseResources();
  if (!unload || pin_dir_.empty()) return true;
  {
    PinLock lock(pin_dir_);
    if (!lock.Acquire(err) || !UnpinAll(pin_dir_, err)) return false;
  }
  RemoveParentIfEmpty(pin_dir_);
  return true;
}

}  // namespace ferry_bpf
