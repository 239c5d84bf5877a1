#include "args.h"

#include <cmath>
#include <cstdint>
#include <cstdio>

#include "errors.h"

namespace ferry {

namespace {

constexpr double kMaxOffset = 9007199254740992.0;  // 2^53
constexpr double kMaxFd = 2147483647.0;

const char* TypeName(const Napi::Value& value) {
  switch (value.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_object: return "object";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
  }
  return "unknown";
}

std::string FormatNumber(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.17g", value);
  return text;
}

bool RequireType(const Napi::CallbackInfo& info, size_t index,
                 const char* name, napi_valuetype type, const char* expected) {
  Napi::Value value = info[index];
  if (value.Type() == type) return true;
  ThrowTypeError(info.Env(), std::string("The \"") + name +
                                 "\" argument must be of type " + expected +
                                 ", received " + TypeName(value));
  return false;
}

bool ReadInteger(const Napi::CallbackInfo& info, size_t index,
                 const char* name, double max, double* out) {
  if (!RequireType(info, index, name, napi_number, "number")) return false;
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(value) || value != std::floor(value) || value < 0 ||
      value > max) {
    ThrowRangeError(info.Env(), std::string("The \"") + name +
                                    "\" argument must be an integer >= 0 and <= " +
                                    FormatNumber(max) + ", received " +
                                    FormatNumber(value));
    return false;
  }
  *out = value;
  return true;
}

}  // namespace

bool ReadFd(const Napi::CallbackInfo& info, size_t index, const char* name,
            int* out) {
  double value;
  if (!ReadInteger(info, index, name, kMaxFd, &value)) return false;
  *out = static_cast<int>(value);
  return true;
}

bool ReadOffset(const Napi::CallbackInfo& info, size_t index, const char* name,
                int64_t* out) {
  double value;
  if (!ReadInteger(info, index, name, kMaxOffset, &value)) return false;
  *out = static_cast<int64_t>(value);
  return true;
}

bool ReadBool(const Napi::CallbackInfo& info, size_t index, const char* name,
              bool* out) {
  if (!RequireType(info, index, name, napi_boolean, "boolean")) return false;
  *out = info[index].As<Napi::Boolean>().Value();
  return true;
}

bool ReadString(const Napi::CallbackInfo& info, size_t index, const char* name,
                std::string* out) {
  if (!RequireType(info, index, name, napi_string, "string")) return false;
  *out = info[index].As<Napi::String>().Utf8Value();
  return true;
}

bool ReadPath(const Napi::CallbackInfo& info, size_t index, const char* name,
              std::string* out) {
  if (!ReadString(info, index, name, out)) return false;
  // An embedded NUL would silently truncate the path passed to the kernel.
  if (out->empty() || out->find('\0') != std::string::npos) {
    ThrowTypeError(info.Env(), std::string("The \"") + name +
                                   "\" argument must be a non-empty string "
                                   "without null bytes",
                   "ERR_INVALID_ARG_VALUE");
    return false;
  }
  return true;
}

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

}  // namespace ferry
