/* SPDX-License-Identifier: MIT */
/* Real reference counts of every host cluster, from the metadata walk. */
#ifndef UQ_RECOUNT_H
#define UQ_RECOUNT_H

#include <stdint.h>

#include "internal.h"

/* References to every cluster below the end of the file (or of the
 * allocated range, if further): header, L1 and L2 tables, data,
 * snapshots and their table, valid bitmaps. Not the refcount structures
 * themselves. *counts is malloc'd, *nclusters entries. */
int uq_count_refs(uq_image *img, uint64_t **counts, uint64_t *nclusters);

#endif
