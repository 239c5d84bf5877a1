#include "trace_pins.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace ferry_bpf {

namespace {

constexpr long kBpfFsMagic = 0xcafe4a11;
constexpr const char* kBpfFsRoot = "/sys/fs/bpf";
constexpr const char* kVmlinuxBtf = "/sys/kernel/btf/vmlinux";
constexpr const char* kProgramName = "ferry_rq_complete";
constexpr const char* kLinkFile = "ferry_link";
constexpr size_t kLogTailBytes = 3000;

struct MapSlot {
  const char* name;
  int PinnedMaps::*fd;
};

constexpr MapSlot kMaps[] = {
    {"ferry_ring", &PinnedMaps::ring},
    {"ferry_disks", &PinnedMaps::disks},
    {"ferry_bitmap", &PinnedMaps::bitmap},
    {"ferry_full", &PinnedMaps::full},
    {"ferry_counters", &PinnedMaps::counters},
    {"ferry_meta", &PinnedMaps::meta},
};

std::string Join(const std::string& dir, const char* name) {
  return dir + "/" + name;
}

std::string ErrnoText(int err) {
  const char* desc = strerrordesc_np(err);
  return desc != nullptr ? desc : "Unknown error";
}

// libbpf's messages (the verifier log among them) while loading, for the error.
std::string g_libbpf_log;
bool g_capture_log = false;

int CaptureLibbpfPrint(enum libbpf_print_level level, const char* format,
                       va_list args) {
  if (!g_capture_log || level == LIBBPF_DEBUG) return 0;
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n > 0) {
    std::string text(static_cast<size_t>(n) + 1, '\0');
    vsnprintf(&text[0], text.size(), format, args);
    text.resize(static_cast<size_t>(n));
    g_libbpf_log.append(text);
  }
  if (g_libbpf_log.size() > 64 * 1024) {
    g_libbpf_log.erase(0, g_libbpf_log.size() - 32 * 1024);
  }
  return 0;
}

std::string LogTail() {
  if (g_libbpf_log.size() <= kLogTailBytes) return g_libbpf_log;
  return "..." + g_libbpf_log.substr(g_libbpf_log.size() - kLogTailBytes);
}

class LogCapture {
 public:
  LogCapture() {
    g_libbpf_log.clear();
    g_capture_log = true;
    previous_ = libbpf_set_print(CaptureLibbpfPrint);
  }
  ~LogCapture() {
    libbpf_set_print(previous_);
    g_capture_log = false;
  }

 private:
  libbpf_print_fn_t previous_;
};

const char* kKernelNeeds =
    "It needs Linux 5.12 or later with BTF (BPF ring buffer, tp_btf, atomic "
    "OR): Debian 12, Ubuntu 22.04, RHEL 9 and later";

std::string KernelRelease() {
  struct utsname u {};
  return uname(&u) == 0 ? u.release : "unknown";
}

const char* kNeedsPrivilege =
    "the eBPF write tracker needs root (CAP_BPF, CAP_PERFMON and "
    "CAP_SYS_ADMIN)";

bool PermissionOr(TraceError* err, int e, const char* syscall,
                  const char* reason, const std::string& message) {
  if (e == EPERM || e == EACCES) {
    return Fail(err, e, syscall, "permission",
                message + ": " + ErrnoText(e) + "; " + kNeedsPrivilege);
  }
  return Fail(err, e, syscall, reason, message + ": " + ErrnoText(e));
}

bool IsBpfFs(const std::string& path) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == kBpfFsMagic;
}

bool UnderBpfFsRoot(const std::string& path) {
  size_t n = strlen(kBpfFsRoot);
  return path.compare(0, n, kBpfFsRoot) == 0 &&
         (path.size() == n || path[n] == '/');
}

bool MakeDirs(const std::string& dir, TraceError* err) {
  for (size_t pos = 1; pos <= dir.size(); pos++) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string prefix = dir.substr(0, pos);
    if (mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return PermissionOr(err, errno, "mkdir", "bpffs",
                          "cannot create the pin directory " + prefix);
    }
  }
  return true;
}

bool PreparePinDir(const std::string& pin_dir, TraceError* err) {
  if (pin_dir.empty() || pin_dir[0] != '/') {
    return Fail(err, EINVAL, nullptr, "bpffs",
                "the pin directory must be an absolute path, got '" + pin_dir +
                    "'");
  }
  if (UnderBpfFsRoot(pin_dir) && !IsBpfFs(kBpfFsRoot)) {
    if (mount("bpf", kBpfFsRoot, "bpf", 0, "mode=0700") != 0) {
      int e = errno;
      return PermissionOr(err, e, "mount", "bpffs",
                          std::string("bpffs is not mounted at ") + kBpfFsRoot +
                              " and mounting it failed (mount -t bpf bpf " +
                              kBpfFsRoot + ")");
    }
  }
  if (!MakeDirs(pin_dir, err)) return false;
  if (!IsBpfFs(pin_dir)) {
    return Fail(err, ENOTSUP, "statfs", "bpffs",
                "the pin directory " + pin_dir +
                    " is not on a bpf file system (mount -t bpf bpf " +
                    kBpfFsRoot + ")");
  }
  return true;
}

bool CheckBtf(TraceError* err) {
  if (access(kVmlinuxBtf, R_OK) == 0) return true;
  int e = errno;
  if (e == EACCES) {
    return Fail(err, e, "access", "permission",
                std::string("cannot read ") + kVmlinuxBtf + "; " +
                    kNeedsPrivilege);
  }
  return Fail(err, e, "access", "no-btf",
              std::string("this kernel (") + KernelRelease() +
                  ") has no BTF (" + kVmlinuxBtf +
                  " is missing): the eBPF write tracker needs a kernel built "
                  "with CONFIG_DEBUG_INFO_BTF. " + kKernelNeeds);
}

// Opens every pinned map; false with *stale when something is missing.
bool GetPinnedMaps(const std::string& pin_dir, PinnedMaps* maps, bool* stale,
                   TraceError* err) {
  *stale = false;
  for (const MapSlot& slot : kMaps) {
    int fd = bpf_obj_get(Join(pin_dir, slot.name).c_str());
    if (fd < 0) {
      int e = errno;
      ClosePinnedMaps(maps);
      if (e == ENOENT) {
        *stale = true;
        return false;
      }
      return PermissionOr(err, e, "bpf", "pinned",
                          "cannot open the pinned map " +
                              Join(pin_dir, slot.name));
    }
    maps->*(slot.fd) = fd;
  }
  return true;
}

bool ReadMeta(int meta_fd, ferry_trace_meta* meta, TraceError* err) {
  uint32_t zero = 0;
  if (bpf_map_lookup_elem(meta_fd, &zero, meta) != 0) {
    return PermissionOr(err, errno, "bpf", "pinned",
                        "cannot read the tracker's meta map");
  }
  return true;
}

// The program pinned under pin_dir, when it is complete and of our ABI.
bool TryReuse(const std::string& pin_dir, OpenedTracker* out, bool* reusable,
              TraceError* err) {
  *reusable = false;
  if (access(Join(pin_dir, kLinkFile).c_str(), F_OK) != 0) return true;
  bool stale = false;
  PinnedMaps maps;
  if (!GetPinnedMaps(pin_dir, &maps, &stale, err)) return stale;
  ferry_trace_meta meta{};
  if (!ReadMeta(maps.meta, &meta, err)) {
    ClosePinnedMaps(&maps);
    return false;
  }
  if (meta.abi != FERRY_TRACE_ABI) {
    ClosePinnedMaps(&maps);
    return true;
  }
  out->maps = maps;
  out->meta = meta;
  out->reused = true;
  *reusable = true;
  return true;
}

struct LoadState {
  bpf_object* obj = nullptr;
  bpf_link* link = nullptr;
  ~LoadState() {
    if (link != nullptr) bpf_link__destroy(link);
    if (obj != nullptr) bpf_object__close(obj);
  }
};

bool LoadError(TraceError* err, int e, const char* reason,
               const std::string& what) {
  std::string tail = LogTail();
  std::string message = what + ": " + ErrnoText(e);
  if (e == EPERM) {
    message += std::string("; ") + kNeedsPrivilege;
    reason = "permission";
  }
  if (!tail.empty()) message += "\nlibbpf log (tail):\n" + tail;
  return Fail(err, e, "bpf", reason, message);
}

bool LoadAndPin(const std::string& pin_dir, const std::string& object_path,
                uint32_t ring_bytes, TraceError* err) {
  LogCapture capture;
  LoadState st;
  st.obj = bpf_object__open_file(object_path.c_str(), nullptr);
  if (st.obj == nullptr) {
    int e = errno;
    st.obj = nullptr;
    return LoadError(err, e, "object",
                     "cannot open the BPF object " + object_path +
                         " (rebuild the addon: npm run install)");
  }
  bpf_map* ring = bpf_object__find_map_by_name(st.obj, "ferry_ring");
  bpf_program* prog = bpf_object__find_program_by_name(st.obj, kProgramName);
  if (ring == nullptr || prog == nullptr) {
    return Fail(err, EINVAL, nullptr, "object",
                "the BPF object " + object_path +
                    " is not Ferry's write tracker (rebuild the addon)");
  }
  int rc = bpf_map__set_max_entries(ring, ring_bytes);
  if (rc != 0) return LoadError(err, -rc, "object", "cannot size the ring");
  rc = bpf_object__load(st.obj);
  if (rc != 0) {
    return LoadError(err, -rc, "load",
                     "the kernel (" + KernelRelease() +
                         ") refused the eBPF write tracker (" + object_path +
                         "). " + kKernelNeeds);
  }

  ferry_trace_meta meta{};
  meta.abi = FERRY_TRACE_ABI;
  meta.ring_bytes = ring_bytes;
  if (getrandom(&meta.instance_id, sizeof(meta.instance_id), 0) !=
      static_cast<ssize_t>(sizeof(meta.instance_id))) {
    return Fail(err, errno, "getrandom", "system",
                "cannot draw the tracker's instance id");
  }
  uint32_t zero = 0;
  bpf_map* meta_map = bpf_object__find_map_by_name(st.obj, "ferry_meta");
  if (meta_map == nullptr ||
      bpf_map_update_elem(bpf_map__fd(meta_map), &zero, &meta, BPF_ANY) != 0) {
    return LoadError(err, meta_map == nullptr ? EINVAL : errno, "load",
                     "cannot write the tracker's meta map");
  }

  for (const MapSlot& slot : kMaps) {
    bpf_map* map = bpf_object__find_map_by_name(st.obj, slot.name);
    if (map == nullptr) {
      return Fail(err, EINVAL, nullptr, "object",
                  std::string("the BPF object has no map ") + slot.name +
                      " (rebuild the addon)");
    }
    rc = bpf_map__pin(map, Join(pin_dir, slot.name).c_str());
    if (rc != 0) {
      return LoadError(err, -rc, "bpffs",
                       "cannot pin " + Join(pin_dir, slot.name));
    }
  }
  st.link = bpf_program__attach(prog);
  if (st.link == nullptr) {
    return LoadError(err, errno, "attach",
                     "cannot attach the write tracker to the block_rq_complete "
                     "tracepoint (tp_btf) of kernel " + KernelRelease());
  }
  // Pinned last: a complete set of pins is what a later process reuses.
  rc = bpf_link__pin(st.link, Join(pin_dir, kLinkFile).c_str());
  if (rc != 0) {
    return LoadError(err, -rc, "bpffs",
                     "cannot pin " + Join(pin_dir, kLinkFile));
  }
  return true;
}

}  // namespace

void ClosePinnedMaps(PinnedMaps* maps) {
  for (const MapSlot& slot : kMaps) {
    int& fd = maps->*(slot.fd);
    if (fd >= 0) close(fd);
    fd = -1;
  }
}

PinLock::PinLock(const std::string& pin_dir) {
  size_t slash = pin_dir.find_last_of('/');
  dir_ = slash == 0 || slash == std::string::npos ? "/"
                                                  : pin_dir.substr(0, slash);
}

PinLock::~PinLock() {
  if (fd_ >= 0) close(fd_);  // releases the flock
}

bool PinLock::Acquire(TraceError* err) {
  fd_ = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) {
    return PermissionOr(err, errno, "open", "bpffs", "cannot open " + dir_);
  }
  while (flock(fd_, LOCK_EX) != 0) {
    if (errno != EINTR) {
      return Fail(err, errno, "flock", "system",
                  "cannot lock " + dir_ + ": " + ErrnoText(errno));
    }
  }
  return true;
}

bool UnpinAll(const std::string& pin_dir, TraceError* err) {
  DIR* dir = opendir(pin_dir.c_str());
  if (dir == nullptr) {
    if (errno == ENOENT) return true;
    return PermissionOr(err, errno, "opendir", "bpffs",
                        "cannot list " + pin_dir);
  }
  // The link first: the program stops before its maps go.
  std::string link = Join(pin_dir, kLinkFile);
  if (unlink(link.c_str()) != 0 && errno != ENOENT) {
    int e = errno;
    closedir(dir);
    return PermissionOr(err, e, "unlink", "bpffs", "cannot unpin " + link);
  }
  while (dirent* entry = readdir(dir)) {
    if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) {
      continue;
    }
    std::string path = Join(pin_dir, entry->d_name);
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      int e = errno;
      closedir(dir);
      return PermissionOr(err, e, "unlink", "bpffs", "cannot unpin " + path);
    }
  }
  closedir(dir);
  if (rmdir(pin_dir.c_str()) != 0 && errno != ENOENT) {
    return PermissionOr(err, errno, "rmdir", "bpffs",
                        "cannot remove " + pin_dir);
  }
  return true;
}

void RemoveParentIfEmpty(const std::string& pin_dir) {
  size_t slash = pin_dir.find_last_of('/');
  if (slash == 0 || slash == std::string::npos) return;
  std::string parent = pin_dir.substr(0, slash);
  if (parent != kBpfFsRoot) rmdir(parent.c_str());  // fails when in use: fine
}

bool OpenTracker(const std::string& pin_dir, const std::string& object_path,
                 uint32_t ring_bytes, OpenedTracker* out, TraceError* err) {
  if (!CheckBtf(err) || !PreparePinDir(pin_dir, err)) return false;
  PinLock lock(pin_dir);
  if (!lock.Acquire(err)) return false;

  bool reusable = false;
  if (!TryReuse(pin_dir, out, &reusable, err)) return false;
  if (reusable) return true;

  // Nothing usable pinned (none, a partial set, another ABI): start afresh.
  if (!UnpinAll(pin_dir, err) || !MakeDirs(pin_dir, err)) return false;
  if (!LoadAndPin(pin_dir, object_path, ring_bytes, err)) {
    TraceError ignored;
    UnpinAll(pin_dir, &ignored);
    return false;
  }
  bool stale = false;
  if (!GetPinnedMaps(pin_dir, &out->maps, &stale, err)) {
    if (stale) {
      return Fail(err, ENOENT, "bpf", "pinned",
                  "the maps pinned under " + pin_dir + " vanished while loading");
    }
    return false;
  }
  if (!ReadMeta(out->maps.meta, &out->meta, err)) {
    ClosePinnedMaps(&out->maps);
    return false;
  }
  out->reused = false;
  return true;
}

}  // namespace ferry_bpf
