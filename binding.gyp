{
  "targets": [
    {
      "target_name": "ferry_native",
      "sources": [
        "native/addon/addon.cc",
        "native/addon/args.cc",
        "native/addon/device.cc",
        "native/addon/direct_read.cc",
        "native/addon/errors.cc",
        "native/addon/flock.cc",
        "native/addon/file_ops.cc",
        "native/addon/fs_freeze.cc",
        "native/addon/control.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/common",
        "native/linux"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"]
    }
  ]
}
