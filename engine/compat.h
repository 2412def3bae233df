/* SPDX-License-Identifier: MIT */
/* Changing the compatibility level in place (compat.c): v3 to v2 and v2
 * to v3, each crash safe (the header switch is one sector, last). */
#ifndef UQ_COMPAT_H
#define UQ_COMPAT_H

#include <stdint.h>

#include "internal.h"

/* Progress of a long change: done of total steps so far. */
struct uq_progress {
	void (*fn)(void *arg, uint64_t done, uint64_t total);
	void *arg;
};

/* Can the image become v2 with refcount_bits (the width it will have
 * by then)? Refusals worded as qemu-img's. Writes nothing. */
int uq_compat_check_downgrade(uq_image *img, uint32_t refcount_bits);

/* v3 to v2: a lazy image made clean, zero clusters expanded in every L2
 * table (active and snapshots), then the header in v2's layout. */
int uq_compat_downgrade(uq_image *img, const struct uq_progress *p);

/* v2 to v3: snapshot entries given v3's extra data, then the header
 * (header_length 112, refcount_order 4, no feature bits). */
int uq_compat_upgrade(uq_image *img, const struct uq_progress *p);

#endif
