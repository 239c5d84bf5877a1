// SPDX-License-Identifier: GPL-2.0
/* The portable core (native/common/ferry_core.c) compiled into the module. */
#include "ferry_core.c"
