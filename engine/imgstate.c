// SPDX-License-Identifier: MIT
/* Changes to an open image's own state that every layer may make: writes
 * stopped for a stated reason, the active L1 table replaced. Kept apart
 * from image.c (open and close) so lower layers don't call up into it. */
#include <stdlib.h>

#include "internal.h"

void uq_stop_writes(uq_image *img, const char *reason)
{
	if (img->writable || !img->stop_reason)
		img->stop_reason = reason;   /* the first reason is the real one */
	img->writable = false;
}

uint64_t *uq_l1_replace(uq_image *img, uint64_t *l1, uint32_t size, uint64_t off)
{
	uint64_t *old = img->l1;

	img->l1 = l1;
	img->h.l1_size = size;
	img->h.l1_table_offset = off;
	return old;
}
