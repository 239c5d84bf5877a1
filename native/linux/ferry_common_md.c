// SPDX-License-Identifier: GPL-2.0
/* The portable core (native/common/ferry_md.c) compiled into the module. */
#include "ferry_md.c"
