/* SPDX-License-Identifier: MIT */
/* A guest write request (request.c) and the data paths that carry out
 * one cluster's piece of it (write.c). */
#ifndef UQ_REQUEST_H
#define UQ_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* A guest write, zeroing or discard: pieces finish asynchronously. */
struct wreq {
	uq_image *img;
	struct uq_done *d;
	size_t len;
	unsigned pending;         /* pieces in flight, plus one while submitting */
	int err;
	uint64_t punch_off, punch_len;  /* discard-no-unref: kept clusters to punch */
};

/* One piece finished: the last one completes the request. */
void uq_wreq_put(struct wreq *wr);

/* write.c: the piece of a request that falls in one cluster */
int uq_write_piece(struct wreq *wr, const uint8_t *buf, uint64_t off, size_t len);
int uq_write_compressed(struct wreq *wr, const uint8_t *buf, uint64_t off, size_t len);
int uq_zero_piece(struct wreq *wr, uint64_t off, size_t len, unsigned flags);
int uq_discard_piece(struct wreq *wr, uint64_t off, size_t len);
/* Punch what the request's discard-no-unref pieces collected. */
int uq_punch_kept_flush(struct wreq *wr);
/* Bytes from off that one L2 table maps when a discard of len bytes at
 * off can drop that whole table (unmap it from L1 and free it), else 0. */
uint64_t uq_discard_table_span(const uq_image *img, uint64_t off, uint64_t len);
int uq_discard_table(uq_image *img, uint64_t off);
/* Bytes to a host offset that needs no metadata change, on the queue. */
int uq_write_in_place(struct wreq *wr, const uint8_t *buf, size_t len, uint64_t host);

#endif
