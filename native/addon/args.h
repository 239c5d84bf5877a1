// Argument validation for the exported functions. Each reader checks
// info[index]; on failure it leaves a pending TypeError/RangeError and returns
// false, so callers simply `return` (C++ exceptions are disabled).
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace ferry {

bool ReadFd(const Napi::CallbackInfo& info, size_t index, const char* name,
            int* out);
// A non-negative integer <= 2^53.
bool ReadOffset(const Napi::CallbackInfo& info, size_t index, const char* name,
                int64_t* out);
bool ReadBool(const Napi::CallbackInfo& info, size_t index, const char* name,
              bool* out);
bool ReadString(const Napi::CallbackInfo& info, size_t index, const char* name,
                std::string* out);
// A non-empty string without NUL bytes.
bool ReadPath(const Napi::CallbackInfo& info, size_t index, const char* name,
              std::string* out);
// An integer >= 0 and <= 2^32 - 1.
bool ReadU32(const Napi::CallbackInfo& info, size_t index, const char* name,
             uint32_t* out);
// An integer >= 0 and <= 2^53.
bool ReadU64(const Napi::CallbackInfo& info, size_t index, const char* name,
             uint64_t* out);
bool ReadBuffer(const Napi::CallbackInfo& info, size_t index, const char* name,
                Napi::Buffer<uint8_t>* out);

}  // namespace ferry
