/* SPDX-License-Identifier: MIT */
/* Exact costs: the engine's counters (one set per uq_ctx, so each queue
 * counts on its own thread without sharing a cache line) and the metadata
 * I/O helpers that classify what they read and write. */
#ifndef UQ_STATS_H
#define UQ_STATS_H

#include <stdatomic.h>

#include "internal.h"
#include "walk.h"

/* One writer (the ctx's thread); relaxed atomics so the owner thread may
 * read a queue's counters while it runs: plain loads and stores on x86. */
static inline void uq_count(struct uq_ctx *ctx, enum uq_stat s, uint64_t n)
{
	_Atomic uint64_t *c = &ctx->cnt[s];

	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/* A read or write of guest data (the data file, compressed or not). */
void uq_count_data(struct uq_ctx *ctx, bool write, uint64_t bytes);
/* A metadata read or write of kind k (UQ_MK_DATA and UQ_MK_COMPRESSED
 * count as data) that the caller issues itself, e.g. on a queue. */
void uq_count_meta(struct uq_ctx *ctx, enum uq_mkind k, bool write, uint64_t bytes);

/* Synchronous metadata I/O on img->file, counted as kind k. */
int uq_meta_pread(uq_image *img, enum uq_mkind k, void *buf, size_t len, uint64_t off);
int uq_meta_pwrite(uq_image *img, enum uq_mkind k, const void *buf, size_t len,
		   uint64_t off);

/* Queues: their counters join the image's while they live and are kept
 * on the image's ctx when destroyed. Any thread. */
void uq_stats_queue_add(uq_image *img, struct uq_ctx *q);
void uq_stats_queue_drop(uq_image *img, struct uq_ctx *q);

int uq_get_stats_impl(uq_image *img, struct uq_stats *out);
int uq_reset_stats_impl(uq_image *img);

#endif
