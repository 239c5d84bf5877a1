/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Error numbers the core returns (negated).  The values are
 * the Linux errno numbers, so the Linux glue passes them through unchanged
 * (it checks that at build time); the Windows glue maps them to NTSTATUS.
 */
#ifndef FERRY_ERRNO_H
#define FERRY_ERRNO_H

#define FERRY_EAGAIN	11	/* device suspended: retry after resume */
#define FERRY_ENOMEM	12
#define FERRY_EFAULT	14	/* bad user buffer */
#define FERRY_EBUSY	16	/* wrong state for the call (see README) */
#define FERRY_ENODEV	19	/* no such device index */
#define FERRY_EINVAL	22	/* malformed argument */
#define FERRY_ENOSPC	28	/* no room in the stream (ring/seq lease) */
#define FERRY_ERANGE	34	/* offset/length outside the device/bitmap */
#define FERRY_EPROTO	71	/* ABI version mismatch */
#define FERRY_EMSGSIZE	90	/* buffer too small for the next record */
#define FERRY_ENOBUFS	105	/* too many uncommitted batches */
#define FERRY_ETIMEDOUT	110	/* tag hold not achieved in time */
#define FERRY_ESTALE	116	/* batch id / bitmap epoch voided */

#endif /* FERRY_ERRNO_H */
