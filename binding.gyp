{
  "variables": {
    "ferry_bpf%": "<!(node native/bpf/have-toolchain.js)"
  },
  "targets": [
    {
      "target_name": "ferry_native",
      "sources": [
        "native/addon/addon.cc",
        "native/addon/args.cc",
        "native/addon/ctl_values.cc",
        "native/addon/device.cc",
        "native/addon/direct_read.cc",
        "native/addon/errno_posix.cc",
        "native/addon/errors.cc",
        "native/addon/flock.cc",
        "native/addon/file_ops.cc",
        "native/addon/fs_freeze.cc",
        "native/addon/malloc_tune.cc",
        "native/addon/control.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/common",
        "native/linux"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
      "conditions": [
        ["OS=='win'", {
          "sources!": [
            "native/addon/addon.cc",
            "native/addon/device.cc",
            "native/addon/direct_read.cc",
            "native/addon/errno_posix.cc",
            "native/addon/flock.cc",
            "native/addon/file_ops.cc",
            "native/addon/fs_freeze.cc",
            "native/addon/malloc_tune.cc",
            "native/addon/control.cc"
          ],
          "sources": [
            "native/addon/win/addon_win.cc",
            "native/addon/win/control_win.cc",
            "native/addon/win/device_win.cc",
            "native/addon/win/errors_win.cc",
            "native/addon/win/unsupported_win.cc",
            "native/addon/win/vss_win.cc",
            "native/addon/win/win_io.cc"
          ],
          "include_dirs": ["native/addon", "native/addon/win", "native/windows"],
          "defines": ["WIN32_LEAN_AND_MEAN", "NOMINMAX", "_WIN32_WINNT=0x0A00", "UNICODE", "_UNICODE"],
          "libraries": ["vssapi.lib", "ole32.lib"],
          "msvs_settings": {
            "VCCLCompilerTool": { "AdditionalOptions": ["/std:c++17", "/W4"] }
          }
        }]
      ]
    }
  ],
  "conditions": [
    ["OS=='linux' and ferry_bpf==1", {
      "targets": [
        {
          "target_name": "ferry_bpf",
          "sources": [
            "native/bpf/addon_bpf.cc",
            "native/bpf/trace_handle.cc",
            "native/bpf/trace_pins.cc",
            "native/addon/args.cc",
            "native/addon/errno_posix.cc",
            "native/addon/errors.cc"
          ],
          "include_dirs": [
            "<!(node -p \"require('node-addon-api').include_dir\")",
            "native/addon",
            "native/bpf"
          ],
          "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
          "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
          "libraries": ["-lbpf"],
          "actions": [
            {
              "action_name": "ferry_trace_bpf_object",
              "inputs": ["native/bpf/ferry_trace.bpf.c", "native/bpf/ferry_trace.h"],
              "outputs": ["<(PRODUCT_DIR)/ferry_trace.bpf.o"],
              "action": [
                "clang", "-target", "bpf", "-mcpu=v3", "-O2", "-g", "-Wall",
                "-idirafter", "/usr/include/<!(gcc -print-multiarch)",
                "-c", "native/bpf/ferry_trace.bpf.c", "-o", "<@(_outputs)"
              ]
            }
          ]
        }
      ]
    }]
  ]
}
