// Errno names and texts from glibc, for errors.cc.
#include <string.h>

#include "errors.h"

namespace ferry {

const char* ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "UNKNOWN";
}

const char* ErrnoDescription(int err) {
  // strerrordesc_np is thread-safe, unlike strerror.
  const char* desc = strerrordesc_np(err);
  return desc != nullptr ? desc : "Unknown error";
}

}  // namespace ferry
