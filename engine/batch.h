/* SPDX-License-Identifier: MIT */
/* A batch: the metadata requests of one ordering step of a writeback,
 * out on the image's queue together. Nothing waits here: when the last
 * one completes, the batch's idle callback runs (from io_reap), and the
 * next step may go out. */
#ifndef UQ_BATCH_H
#define UQ_BATCH_H

#include <stdint.h>

#include "internal.h"
#include "walk.h"

struct uq_batch {
	uq_image *img;
	unsigned pending;       /* requests in flight */
	int err;                /* the first that failed */
	void (*idle)(struct uq_batch *b);
};

/* Write len bytes of buf at off of the image file, counted as kind k.
 * buf stays untouched until the write completes; own (may be NULL) is
 * freed then. A written L2 table (UQ_MK_L2) is marked clean in the cache. */
int uq_batch_write(struct uq_batch *b, enum uq_mkind k, const void *buf, size_t len,
		   uint64_t off, void *own);
/* A table of n host-order entries, big-endian, in bytes >= n * 8 bytes. */
int uq_batch_write64(struct uq_batch *b, enum uq_mkind k, uint64_t off, const uint64_t *t,
		     uint64_t n, uint64_t bytes);
/* Give [off, off + len) of f back to the file system (IORING_OP_FALLOCATE). */
int uq_batch_punch(struct uq_batch *b, struct io_file *f, uint64_t off, uint64_t len);
/* fdatasync f; once it succeeded, *mark = marked (what it made durable). */
int uq_batch_fsync(struct uq_batch *b, struct io_file *f, uint64_t *mark, uint64_t marked);

#endif
