// SPDX-License-Identifier: MIT
/* Writing metadata back in the order that keeps a crash harmless: data,
 * refcount increases, L2 tables, the L1 table, then the refcount
 * decreases of what the new entries no longer reference; one fsync at
 * each ordering point. Also the flush calls of the API. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "header.h"
#include "internal.h"
#include "request.h"
#include "walk.h"
#include "stats.h"

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }

static int write_l2(void *arg, uint64_t off, const uint8_t *tab)
{
	uq_image *img = arg;
	int ret;

	uq_count(img->ctx, UQ_STAT_L2_WRITEBACKS, 1);
	ret = uq_meta_pwrite(img, UQ_MK_L2, tab, csz(img), off);

	if (ret == 0)
		l2c_clean(img->l2c, off);
	return ret;
}

static int write_l1(uq_image *img)
{
	return uq_write_table64(img, UQ_MK_L1, img->h.l1_table_offset, img->l1, img->h.l1_size,
				(uint64_t)img->h.l1_size * 8);
}

/* Writes, punches, preallocations and truncations through f so far, from
 * its accounting layer; UINT64_MAX where it has none (always sync). */
static uint64_t changes(struct io_file *f)
{
	static const int kinds[] = { IO_CNT_WRITE_OPS, IO_CNT_PUNCH_OPS, IO_CNT_FALLOC_OPS,
				     IO_CNT_TRUNCATE_OPS };
	const struct io_counts *c = io_counts_of(f);
	uint64_t n = 0;

	if (!c)
		return UINT64_MAX;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		n += atomic_load_explicit(&c->v[kinds[i]], memory_order_relaxed);
	return n;
}

/* fsync f unless nothing changed through it since the last fsync made
 * here: that sync would make nothing durable. Requests are counted as
 * they are issued, so none may be in flight (callers reap them first). */
static int sync_changed(struct io_file *f, uint64_t *mark)
{
	uint64_t now = changes(f);
	int ret;

	if (now != UINT64_MAX && now == *mark)
		return 0;
	ret = io_fsync(f);
	if (ret == 0)
		*mark = now;
	return ret;
}

static int sync_file(uq_image *img)
{
	return sync_changed(img->file, &img->synced_file);
}

/* Data writes complete before any L2 entry that points at them is
 * written; a failed one stops all metadata writes. */
static int reap_data(uq_image *img)
{
	int ret = 0;

	while (img->writes_inflight && ret >= 0)
		ret = io_reap(img->ctx->q, 1);
	if (ret < 0)
		return ret;
	if (!img->writable)   /* a data write failed: its L2 entry must stay off disk */
		return uq_seterr(-EIO, "%s: a data write failed; metadata is not written",
				 img->path);
	return 0;
}

static bool rb_dirty(const uq_image *img)
{
	for (uint64_t i = 0; i < img->rc.entries; i++)
		if (img->rc.block_dirty[i])
			return true;
	return img->rc.table_dirty;
}

/* Before any L2 table goes out: the dirty bit (lazy refcounts), the data
 * file's data durable, refcount increases written (not yet synced). */
static int write_increases(uq_image *img)
{
	int ret = 0;

	if (img->rc.lazy)
		ret = uq_header_set_dirty(img, true);
	if (ret == 0 && img->data != img->file)
		ret = sync_changed(img->data, &img->synced_data);
	if (ret == 0 && !img->rc.lazy)
		ret = uq_rc_write_dirty(img);
	return ret;
}

/* Data, then refcount increases, then L2 tables, then L1, then the
 * refcount decreases of what the new L2 entries no longer reference. */
int uq_meta_flush(uq_image *img)
{
	bool l2;
	int ret = 0;

	/* data before the L2 entries that point at it */
	ret = reap_data(img);
	if (ret < 0)
		return ret;
	l2 = l2c_dirty_count(img->l2c) > 0;
	if (!l2 && !img->l1_dirty && !img->rc.nfrees && !(img->rc.lazy ? false : rb_dirty(img))) {
		/* no metadata, but data written in place must be durable too */
		ret = img->data != img->file ? sync_changed(img->data, &img->synced_data) : 0;
		if (ret == 0)
			ret = sync_file(img);
		return ret < 0 ? uq_seterr(ret, "%s: flush failed: %s", img->path,
					   strerror(-ret)) : 0;
	}
	uq_count(img->ctx, UQ_STAT_META_FLUSHES, 1);
	ret = write_increases(img);
	if (ret == 0)
		ret = sync_file(img);
	if (ret == 0 && l2)
		ret = l2c_for_each_dirty(img->l2c, write_l2, img);
	if (ret == 0 && img->l1_dirty) {
		ret = sync_file(img);
		if (ret == 0)
			ret = write_l1(img);
		img->l1_dirty = false;
	}
	if (ret == 0 && img->rc.nfrees) {
		ret = sync_file(img);
		if (ret == 0)
			ret = uq_rc_apply_frees(img);
		img->alloc.comp_next = 0;   /* its cluster may have been freed */
		if (ret == 0 && !img->rc.lazy)
			ret = uq_rc_write_dirty(img);
	}
	if (ret == 0)
		ret = sync_file(img);
	if (ret < 0) {
		uq_stop_writes(img, "writing metadata failed");
		return uq_seterr(ret, "%s: writing metadata failed: %s", img->path,
				 strerror(-ret));
	}
	return 0;
}

static bool frees_over(const uq_image *img)
{
	return img->rc.free_clusters * img->g.cluster_size >= UQ_FREE_BUDGET_BYTES ||
	       img->rc.nfrees >= UQ_FREE_BUDGET_RUNS;
}

int uq_frees_bound(uq_image *img)
{
	return frees_over(img) ? uq_meta_flush(img) : 0;
}

/* The first half of uq_meta_flush: increases, then the L2 tables, with no
 * sync after them. What the tables drop stays deferred (freeing needs
 * them durable, and L1 after them), so eviction under a small cache costs
 * table writes, not syncs; past the budget of deferred frees, a flush. */
int uq_l2_writeback(uq_image *img)
{
	uint64_t now;
	int ret;

	if (frees_over(img))
		return uq_meta_flush(img);
	ret = reap_data(img);
	if (ret < 0)
		return ret;
	uq_count(img->ctx, UQ_STAT_L2_BATCH_WRITEBACKS, 1);
	ret = write_increases(img);
	/* increases and data written in place must be durable before tables
	 * that rely on them; tables of an earlier batch need no sync first */
	now = changes(img->file);
	if (ret == 0 && (now == UINT64_MAX || now != img->l2_batch_mark))
		ret = sync_file(img);
	if (ret == 0)
		ret = l2c_for_each_dirty(img->l2c, write_l2, img);
	if (ret == 0)
		img->l2_batch_mark = changes(img->file);
	if (ret < 0) {
		uq_stop_writes(img, "writing metadata failed");
		return uq_seterr(ret, "%s: writing L2 tables failed: %s", img->path,
				 strerror(-ret));
	}
	return 0;
}

int uq_flush_impl(uq_image *img)
{
	int ret;

	if (!(img->flags & UQ_OPEN_RDWR))
		return 0;
	uq_count(img->ctx, UQ_STAT_REQ_FLUSH_OPS, 1);
	if (img->fmt != UQ_FMT_QCOW2) {
		while (io_pending(img->ctx->q))
			if (io_reap(img->ctx->q, 1) < 0)
				break;
		return io_fsync(img->file);
	}
	if (!img->writable)
		return uq_seterr(-EIO, "%s: image can't be written", img->path);
	ret = uq_meta_flush(img);
	return ret;
}

int uq_aio_flush_impl(uq_image *img, uq_done_fn cb, void *arg)
{
	struct uq_done *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->cb = cb;
	d->arg = arg;
	d->ctx = img->ctx;
	d->res = uq_flush_impl(img);
	uq_ctx_complete(img->ctx, d);
	return 0;
}
