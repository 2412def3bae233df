// SPDX-License-Identifier: MIT
/* Exact costs: the counters' names, the metadata I/O that counts itself,
 * and uq_get_stats, which adds up the ctx counters of the image and its
 * queues, the accounting layers under every file of the chain and the L2
 * caches' evictions. */
#include <pthread.h>
#include <string.h>

#include "stats.h"

static const char *const names[UQ_STAT_COUNT] = {
	[UQ_STAT_REQ_READ_OPS] = "req_read_ops",
	[UQ_STAT_REQ_READ_BYTES] = "req_read_bytes",
	[UQ_STAT_REQ_WRITE_OPS] = "req_write_ops",
	[UQ_STAT_REQ_WRITE_BYTES] = "req_write_bytes",
	[UQ_STAT_REQ_ZERO_OPS] = "req_zero_ops",
	[UQ_STAT_REQ_ZERO_BYTES] = "req_zero_bytes",
	[UQ_STAT_REQ_DISCARD_OPS] = "req_discard_ops",
	[UQ_STAT_REQ_DISCARD_BYTES] = "req_discard_bytes",
	[UQ_STAT_REQ_FLUSH_OPS] = "req_flush_ops",
	[UQ_STAT_FILE_READ_OPS] = "file_read_ops",
	[UQ_STAT_FILE_READ_BYTES] = "file_read_bytes",
	[UQ_STAT_FILE_WRITE_OPS] = "file_write_ops",
	[UQ_STAT_FILE_WRITE_BYTES] = "file_write_bytes",
	[UQ_STAT_FILE_SYNC_OPS] = "file_sync_ops",
	[UQ_STAT_FILE_PUNCH_OPS] = "file_punch_ops",
	[UQ_STAT_FILE_PUNCH_BYTES] = "file_punch_bytes",
	[UQ_STAT_FILE_FALLOC_OPS] = "file_falloc_ops",
	[UQ_STAT_FILE_FALLOC_BYTES] = "file_falloc_bytes",
	[UQ_STAT_FILE_TRUNCATE_OPS] = "file_truncate_ops",
	[UQ_STAT_DATA_READ_OPS] = "data_read_ops",
	[UQ_STAT_DATA_READ_BYTES] = "data_read_bytes",
	[UQ_STAT_DATA_WRITE_OPS] = "data_write_ops",
	[UQ_STAT_DATA_WRITE_BYTES] = "data_write_bytes",
	[UQ_STAT_META_READ_OPS] = "meta_read_ops",
	[UQ_STAT_META_READ_BYTES] = "meta_read_bytes",
	[UQ_STAT_META_WRITE_OPS] = "meta_write_ops",
	[UQ_STAT_META_WRITE_BYTES] = "meta_write_bytes",
#define KIND(K, k) \
	[UQ_STAT_##K##_READ_OPS] = #k "_read_ops", \
	[UQ_STAT_##K##_READ_BYTES] = #k "_read_bytes", \
	[UQ_STAT_##K##_WRITE_OPS] = #k "_write_ops", \
	[UQ_STAT_##K##_WRITE_BYTES] = #k "_write_bytes"
	KIND(HEADER, header), KIND(L1, l1), KIND(L2, l2), KIND(REFTABLE, reftable),
	KIND(REFBLOCK, refblock), KIND(SNAPTABLE, snaptable), KIND(BITMAP, bitmap),
	KIND(OTHER, other),
#undef KIND
	[UQ_STAT_L2_HITS] = "l2_hits",
	[UQ_STAT_L2_MISSES] = "l2_misses",
	[UQ_STAT_L2_EVICTIONS] = "l2_evictions",
	[UQ_STAT_L2_WRITEBACKS] = "l2_writebacks",
	[UQ_STAT_REFBLOCK_LOADS] = "refblock_loads",
	[UQ_STAT_REFBLOCK_WRITEBACKS] = "refblock_writebacks",
	[UQ_STAT_CLUSTERS_ALLOCATED] = "clusters_allocated",
	[UQ_STAT_CLUSTERS_FREED] = "clusters_freed",
	[UQ_STAT_COW_COPIES] = "cow_copies",
	[UQ_STAT_COMPRESSED_WRITES] = "compressed_writes",
	[UQ_STAT_META_FLUSHES] = "meta_flushes",
	[UQ_STAT_REFBLOCK_EVICTIONS] = "refblock_evictions",
	[UQ_STAT_L2_BATCH_WRITEBACKS] = "l2_batch_writebacks",
	[UQ_STAT_L2_TABLES_FREED] = "l2_tables_freed",
};

const char *uq_stat_name(unsigned stat)
{
	return stat < UQ_STAT_COUNT ? names[stat] : NULL;
}

/* First counter (read ops) of the four of kind k; -1 for guest data. */
static int kind_base(enum uq_mkind k)
{
	switch (k) {
	case UQ_MK_HEADER: return UQ_STAT_HEADER_READ_OPS;
	case UQ_MK_L1: return UQ_STAT_L1_READ_OPS;
	case UQ_MK_L2: return UQ_STAT_L2_READ_OPS;
	case UQ_MK_REFTABLE: return UQ_STAT_REFTABLE_READ_OPS;
	case UQ_MK_REFBLOCK: return UQ_STAT_REFBLOCK_READ_OPS;
	case UQ_MK_SNAPTABLE: return UQ_STAT_SNAPTABLE_READ_OPS;
	case UQ_MK_BITMAP_DIR:
	case UQ_MK_BITMAP_TABLE:
	case UQ_MK_BITMAP_DATA: return UQ_STAT_BITMAP_READ_OPS;
	case UQ_MK_DATA:
	case UQ_MK_COMPRESSED: return -1;
	default: return UQ_STAT_OTHER_READ_OPS;
	}
}

void uq_count_data(struct uq_ctx *ctx, bool write, uint64_t bytes)
{
	uq_count(ctx, write ? UQ_STAT_DATA_WRITE_OPS : UQ_STAT_DATA_READ_OPS, 1);
	uq_count(ctx, write ? UQ_STAT_DATA_WRITE_BYTES : UQ_STAT_DATA_READ_BYTES, bytes);
}

void uq_count_meta(struct uq_ctx *ctx, enum uq_mkind k, bool write, uint64_t bytes)
{
	int b = kind_base(k);

	if (b < 0) {
		uq_count_data(ctx, write, bytes);
		return;
	}
	b += write ? 2 : 0;
	uq_count(ctx, (enum uq_stat)b, 1);
	uq_count(ctx, (enum uq_stat)(b + 1), bytes);
}

int uq_meta_pread(uq_image *img, enum uq_mkind k, void *buf, size_t len, uint64_t off)
{
	if (len)
		uq_count_meta(img->ctx, k, false, len);
	return io_pread_full(img->file, buf, len, off);
}

int uq_meta_pwrite(uq_image *img, enum uq_mkind k, const void *buf, size_t len,
		   uint64_t off)
{
	if (len)
		uq_count_meta(img->ctx, k, true, len);
	return io_pwrite_full(img->file, buf, len, off);
}

/* Queues come and go on their own threads: the list of an image's queues
 * and what destroyed ones counted are under one lock (rarely taken). */
static pthread_mutex_t queues_lock = PTHREAD_MUTEX_INITIALIZER;

void uq_stats_queue_add(uq_image *img, struct uq_ctx *q)
{
	pthread_mutex_lock(&queues_lock);
	q->qnext = img->ctx->queues;
	img->ctx->queues = q;
	pthread_mutex_unlock(&queues_lock);
}

void uq_stats_queue_drop(uq_image *img, struct uq_ctx *q)
{
	struct uq_ctx **p;

	pthread_mutex_lock(&queues_lock);
	for (p = &img->ctx->queues; *p && *p != q; p = &(*p)->qnext)
		;
	if (*p)
		*p = q->qnext;
	for (unsigned i = 0; i < UQ_STAT_COUNT; i++)
		img->ctx->folded[i] += atomic_load_explicit(&q->cnt[i], memory_order_relaxed);
	pthread_mutex_unlock(&queues_lock);
}

static void add_ctx(uint64_t *v, const struct uq_ctx *c)
{
	for (unsigned i = 0; i < UQ_STAT_COUNT; i++)
		v[i] += atomic_load_explicit(&c->cnt[i], memory_order_relaxed);
}

static void add_file(uint64_t *v, struct io_file *f)
{
	static const unsigned map[IO_CNT_COUNT] = {
		[IO_CNT_READ_OPS] = UQ_STAT_FILE_READ_OPS,
		[IO_CNT_READ_BYTES] = UQ_STAT_FILE_READ_BYTES,
		[IO_CNT_WRITE_OPS] = UQ_STAT_FILE_WRITE_OPS,
		[IO_CNT_WRITE_BYTES] = UQ_STAT_FILE_WRITE_BYTES,
		[IO_CNT_SYNC_OPS] = UQ_STAT_FILE_SYNC_OPS,
		[IO_CNT_PUNCH_OPS] = UQ_STAT_FILE_PUNCH_OPS,
		[IO_CNT_PUNCH_BYTES] = UQ_STAT_FILE_PUNCH_BYTES,
		[IO_CNT_FALLOC_OPS] = UQ_STAT_FILE_FALLOC_OPS,
		[IO_CNT_FALLOC_BYTES] = UQ_STAT_FILE_FALLOC_BYTES,
		[IO_CNT_TRUNCATE_OPS] = UQ_STAT_FILE_TRUNCATE_OPS,
	};
	const struct io_counts *c = f ? io_counts_of(f) : NULL;

	if (!c)
		return;
	for (unsigned i = 0; i < IO_CNT_COUNT; i++)
		v[map[i]] += atomic_load_explicit(&c->v[i], memory_order_relaxed);
}

/* Everything counted since open, before subtracting the reset point. */
static void totals(uq_image *img, uint64_t *v)
{
	memset(v, 0, UQ_STAT_COUNT * sizeof(*v));
	add_ctx(v, img->ctx);
	pthread_mutex_lock(&queues_lock);
	for (const struct uq_ctx *q = img->ctx->queues; q; q = q->qnext)
		add_ctx(v, q);
	for (unsigned i = 0; i < UQ_STAT_COUNT; i++)
		v[i] += img->ctx->folded[i];
	pthread_mutex_unlock(&queues_lock);
	for (uq_image *i = img; i; i = i->backing) {
		add_file(v, i->file);
		if (i->data != i->file)
			add_file(v, i->data);
		if (i->l2c)
			v[UQ_STAT_L2_EVICTIONS] += l2c_evictions(i->l2c);
	}
	for (unsigned k = UQ_STAT_HEADER_READ_OPS; k < UQ_STAT_L2_HITS; k += 4) {
		v[UQ_STAT_META_READ_OPS] += v[k];
		v[UQ_STAT_META_READ_BYTES] += v[k + 1];
		v[UQ_STAT_META_WRITE_OPS] += v[k + 2];
		v[UQ_STAT_META_WRITE_BYTES] += v[k + 3];
	}
}

int uq_get_stats_impl(uq_image *img, struct uq_stats *out)
{
	uint64_t v[UQ_STAT_COUNT];

	totals(img, v);
	for (unsigned i = 0; i < UQ_STAT_COUNT; i++)
		out->v[i] = v[i] - img->ctx->base[i];
	return 0;
}

int uq_reset_stats_impl(uq_image *img)
{
	totals(img, img->ctx->base);
	return 0;
}
