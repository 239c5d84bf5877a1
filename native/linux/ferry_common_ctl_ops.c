// SPDX-License-Identifier: GPL-2.0
/* The shared control calls (native/common/ferry_ctl_ops.c) compiled into the module. */
#include "ferry_ctl_ops.c"
