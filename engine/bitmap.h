/* SPDX-License-Identifier: MIT */
/* Persistent dirty bitmaps of an open image (bitmap.c): the directory as
 * loaded, the bits of the bitmaps this handle keeps in memory, marking
 * guest writes, and writing them back crash safe. bmops.c builds the
 * bitmap calls of the API on it. */
#ifndef UQ_BITMAP_H
#define UQ_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* Bits all loaded bitmaps of one image may take in memory: QEMU's limit
 * is 512 MiB per bitmap; two of those are plenty and a hostile directory
 * can't make us allocate more. */
#define UQ_BM_MEM_MAX (1ull << 30)

struct uq_bm {
	char *name;               /* NUL-terminated copy */
	uint16_t name_len;
	uint32_t flags;           /* QCOW_BMF_*, as the next directory write has them */
	uint8_t gran_bits;
	uint64_t table_off;       /* as on disk; 0 for a bitmap not yet written */
	uint32_t table_size;
	uint8_t *data;            /* the bits, when loaded; NULL otherwise */
	uint64_t data_bytes;
	bool track;               /* set by guest writes (enabled, loaded here) */
	bool changed;             /* data differs from what table_off holds */
};

/* Load the directory (every open of a v3 image whose autoclear bit says
 * the bitmaps are valid). Malformed metadata refuses a writable open with
 * the reason; a read-only open goes on without bitmaps and keeps the
 * reason for uq_get_info. */
int uq_bm_load_dir(uq_image *img);
void uq_bm_release(uq_image *img);

/* Read-write open: load every enabled, consistent bitmap and mark it in
 * use on disk before any guest write. */
int uq_bm_start(uq_image *img);
/* Clean close: write the tracked bitmaps back and clear in_use. */
int uq_bm_finish(uq_image *img);

/* A guest write, write-zeroes or discard of [off, off + len): set the bits
 * of every granule it touches in each tracked bitmap. */
void uq_bm_dirty_range(uq_image *img, uint64_t off, uint64_t len);
static inline void uq_bm_dirty(uq_image *img, uint64_t off, uint64_t len)
{
	if (img->bm.tracking)
		uq_bm_dirty_range(img, off, len);
}

/* Bits of bitmap b into memory (b->data), validating its table. */
int uq_bm_load_data(uq_image *img, struct uq_bm *b);
/* Set the bits of [off, off + len) in b (b->data loaded). */
void uq_bm_set_range(struct uq_bm *b, uint64_t vsize, uint64_t off, uint64_t len);

/* Write every changed bitmap to new clusters, then a new directory, then
 * switch the header extension to it, then free what the old ones used.
 * free_off/free_len: more (table, bytes) pairs to free after the switch
 * (removed bitmaps), nfree of them. */
int uq_bm_commit(uq_image *img, const uint64_t *free_off, const uint64_t *free_len,
		 size_t nfree);

/* Around a change of the virtual size: load every consistent bitmap and
 * mark it in use; then fit the bits to img->size (the new part clean),
 * write them and clear in_use on those this handle doesn't track. */
int uq_bm_resize_begin(uq_image *img);
int uq_bm_resize_end(uq_image *img);

/* The bitmap named name, or NULL. */
struct uq_bm *uq_bm_find(uq_image *img, const char *name);

#endif
