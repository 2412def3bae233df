/* SPDX-License-Identifier: MIT */
/* Internal snapshots, the engine side: finding a snapshot, raising or
 * lowering the refcounts an L1 table reaches, and recomputing COPIED. */
#ifndef UQ_SNAPSHOT_H
#define UQ_SNAPSHOT_H

#include <stdint.h>

#include "internal.h"

/* Index of the snapshot whose ID is id_or_name, else of the first whose
 * name is (qemu's lookup order); -ENOENT with a message if none. */
int uq_snap_find(const uq_image *img, const char *id_or_name, uint32_t *idx);

/* Add delta (+1 or -1) to the refcount of every L2 table and every data
 * cluster the L1 table l1 (n entries, host order) reaches, once per
 * reference: a compressed cluster counts for every host cluster its bytes
 * touch. With other (an L1 table of other_n entries, or NULL), references
 * other holds at the same place are skipped: the same L2 table at the
 * same L1 index, the same clusters at the same L2 index (a revert changes
 * only what differs). An increment is all or nothing: on any failure
 * (overflow of a narrow refcount width above all) the ones made are
 * undone and nothing has changed. Decrements drop tables reaching 0 from
 * the metadata set and the L2 cache. Tables are read from the file:
 * flush first. */
int uq_snap_update_refs(uq_image *img, const uint64_t *l1, uint32_t n, int delta,
			const uint64_t *other, uint32_t other_n);

/* Set COPIED in the active L1 table and in the L2 tables it reaches
 * exactly where the refcount is 1, writing changed tables to the file
 * (cached copies are dropped), from the refcounts in memory. */
int uq_snap_fix_copied(uq_image *img);

/* Rewrite the snapshot table so that every entry has v3's extra data
 * (64-bit VM state size, disk size); entries without a disk size get the
 * image's. Crash safe as every table change. No-op if none lacks it. */
int uq_snaps_to_v3(uq_image *img);

#endif
