/* SPDX-License-Identifier: MIT */
/* Writing header fields of an open image (header.c); offsets are the
 * QCOW_HDR_* names in format.h. */
#ifndef UQ_HEADER_H
#define UQ_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

int uq_header_write_field(uq_image *img, size_t off, const void *p, size_t len);
int uq_header_write_u32(uq_image *img, size_t off, uint32_t v);
int uq_header_write_u64(uq_image *img, size_t off, uint64_t v);

/* Virtual size and the active L1 table's size and offset, in one write
 * (a crash leaves all of them old or all new: they share a sector). */
int uq_header_write_size_l1(uq_image *img, uint64_t size, uint32_t l1_size, uint64_t l1_off);

/* Set or clear the dirty bit (lazy refcounts), durable before return. */
int uq_header_set_dirty(uq_image *img, bool on);

/* Refuse a write that would land on metadata: set the corrupt bit (v3)
 * and stop writing. Returns -EIO with a message naming what and where. */
int uq_mark_corrupt(uq_image *img, const char *what, uint64_t host_off);

/* Point the bitmaps extension at a directory of nb bitmaps (dsize bytes at
 * doff; nb == 0 removes the extension) and set the autoclear bit to
 * match, durable before return. In place when the extension exists (one
 * sector: atomic); otherwise the extension area is rewritten. */
int uq_header_bitmaps_ext(uq_image *img, uint32_t nb, uint64_t dsize, uint64_t doff);

#endif
