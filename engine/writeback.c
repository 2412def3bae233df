// SPDX-License-Identifier: MIT
/* Writing metadata back in the order that keeps a crash harmless: data,
 * refcount increases, L2 tables, the L1 table, then the refcount
 * decreases of what the new entries no longer reference; one fsync at
 * each ordering point. A flush runs as a chain of queued batches, so it
 * can be asynchronous (uq_aio_flush) or waited for (uq_meta_flush). */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "error.h"
#include "header.h"
#include "internal.h"
#include "request.h"
#include "walk.h"
#include "stats.h"

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }

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

static bool rb_dirty(const uq_image *img)
{
	for (uint64_t i = 0; i < img->rc.entries; i++)
		if (img->rc.block_dirty[i])
			return true;
	return img->rc.table_dirty;
}

/* A flush is a chain of steps; each puts its requests on the queue as a
 * batch, and the next starts when the batch is idle. An fdatasync is a
 * step of its own: what follows it goes out only once it is done. */
enum fstep {
	F_DATA,             /* data writes in flight land first */
	F_INCREASES,        /* the data file durable, refcount blocks written */
	F_GROWN_SYNC,       /* a grown refcount table: its new blocks durable, */
	F_GROWN_TABLE,      /* then the table */
	F_INCREASES_SYNC,
	F_L2,
	F_L2_SYNC,
	F_L1,
	F_L1_SYNC,
	F_FREES,            /* decreases; freed runs punched on the queue */
	F_FREES_GROWN_SYNC,
	F_FREES_GROWN_TABLE,
	F_END_SYNC,
	F_DONE,
};

struct uq_flush {
	struct uq_batch b;
	enum fstep step;
	bool meta;          /* metadata to write, not only data to make durable */
	bool busy;          /* inside advance: a completion there must not recurse */
	bool done;
	bool orphan;        /* its waiter gave up: free it when done */
	bool tables;        /* uq_l2_writeback: up to the L2 tables, no sync after */
	int err;
	struct uq_done *d;  /* an asynchronous flush's completion; NULL: a waiter */
};

static int queue_sync(struct uq_flush *fl, struct io_file *f, uint64_t *mark)
{
	uint64_t now = changes(f);

	if (now != UINT64_MAX && now == *mark)
		return 0;
	return uq_batch_fsync(&fl->b, f, mark, now);
}

/* The cache hands over a copy: the write owns it until it completes. */
static int queue_l2(void *arg, uint64_t off, uint8_t *tab)
{
	struct uq_flush *fl = arg;
	uq_image *img = fl->b.img;

	uq_count(img->ctx, UQ_STAT_L2_WRITEBACKS, 1);
	return uq_batch_write(&fl->b, UQ_MK_L2, tab, csz(img), off, tab);
}

/* One step: 0 when its requests are queued (maybe none), 1 when it waits
 * for data writes, < 0 on failure. */
static int run_step(uq_image *img, struct uq_flush *fl)
{
	struct uq_batch *b = &fl->b;
	bool rc = !img->rc.lazy;
	int ret = 0;

	switch (fl->step++) {
	case F_DATA:
		if (img->writes_inflight) {
			fl->step = F_DATA;   /* uq_flush_kick goes on */
			return 1;
		}
		if (!img->writable)   /* a data write failed: its L2 entry stays off disk */
			return uq_seterr(-EIO, "%s: a data write failed; metadata is not written",
					 img->path);
		if (fl->tables) {
			uq_count(img->ctx, UQ_STAT_L2_BATCH_WRITEBACKS, 1);
			fl->meta = true;
			return img->rc.lazy ? uq_header_set_dirty(img, true) : 0;
		}
		fl->meta = l2c_dirty_count(img->l2c) > 0 || img->l1_dirty || img->rc.nfrees ||
			   (rc && rb_dirty(img));
		if (!fl->meta) {
			/* no metadata, but data written in place must be durable */
			fl->step = F_END_SYNC;
			return 0;
		}
		uq_count(img->ctx, UQ_STAT_META_FLUSHES, 1);
		return img->rc.lazy ? uq_header_set_dirty(img, true) : 0;
	case F_INCREASES:
		if (img->data != img->file)
			ret = queue_sync(fl, img->data, &img->synced_data);
		return ret == 0 && rc ? uq_rc_queue_dirty(img, b) : ret;
	case F_GROWN_SYNC:
	case F_FREES_GROWN_SYNC:
		return rc && img->rc.table_dirty ? queue_sync(fl, img->file, &img->synced_file) : 0;
	case F_GROWN_TABLE:
	case F_FREES_GROWN_TABLE:
		return rc ? uq_rc_queue_table(img, b) : 0;
	case F_INCREASES_SYNC:
		/* only an earlier batch's tables unsynced: they need no sync */
		if (fl->tables && changes(img->file) != UINT64_MAX &&
		    changes(img->file) == img->l2_batch_mark)
			return 0;
		return queue_sync(fl, img->file, &img->synced_file);
	case F_L2:
		return l2c_for_each_dirty(img->l2c, queue_l2, fl);
	case F_L2_SYNC:
		if (fl->tables) {
			img->l2_batch_mark = changes(img->file);
			fl->step = F_DONE;
			return 0;
		}
		return img->l1_dirty ? queue_sync(fl, img->file, &img->synced_file) : 0;
	case F_L1:
		if (!img->l1_dirty)
			return 0;
		img->l1_dirty = false;
		return uq_batch_write64(b, UQ_MK_L1, img->h.l1_table_offset, img->l1,
					img->h.l1_size, (uint64_t)img->h.l1_size * 8);
	case F_L1_SYNC:
		return img->rc.nfrees ? queue_sync(fl, img->file, &img->synced_file) : 0;
	case F_FREES:
		if (!img->rc.nfrees)
			return 0;
		/* Freed clusters become allocatable only once this flush is
		 * over, after their punches completed (requests wait for it):
		 * a punch can't land on a cluster already reused. */
		ret = uq_rc_apply_frees(img, b);
		img->alloc.comp_next = 0;   /* its cluster may have been freed */
		return ret == 0 && rc ? uq_rc_queue_dirty(img, b) : ret;
	case F_END_SYNC:
		if (!fl->meta && img->data != img->file)
			ret = queue_sync(fl, img->data, &img->synced_data);
		return ret ? ret : queue_sync(fl, img->file, &img->synced_file);
	case F_DONE:
		break;
	}
	fl->step = F_DONE;
	return 0;
}

static void finish(uq_image *img, struct uq_flush *fl)
{
	img->flush = NULL;
	fl->done = true;
	if (fl->err) {
		uq_stop_writes(img, "writing metadata failed");
		if (fl->err != -EIO || !*uq_errmsg())
			uq_seterr(fl->err, "%s: writing metadata failed: %s", img->path,
				  strerror(-fl->err));
	}
	if (fl->d) {
		fl->d->res = fl->err;
		uq_ctx_complete(img->ctx, fl->d);
	}
	if (fl->d || fl->orphan)
		free(fl);
}

/* Run steps while nothing of the last one is in flight. */
static void advance(struct uq_flush *fl)
{
	uq_image *img = fl->b.img;

	if (fl->busy)
		return;
	fl->busy = true;
	while (fl->b.pending == 0 && !fl->err) {
		int ret = fl->b.err;

		if (ret == 0 && fl->step == F_DONE)
			break;
		if (ret == 0)
			ret = run_step(img, fl);
		if (ret > 0)
			break;
		if (ret < 0)
			fl->err = ret;
	}
	fl->busy = false;
	/* after a failure, what is still in flight references fl */
	if (fl->b.pending == 0 && (fl->step == F_DONE || fl->err))
		finish(img, fl);
}

static void batch_idle(struct uq_batch *b)
{
	advance((struct uq_flush *)b);
}

void uq_flush_kick(uq_image *img)
{
	if (img->flush && img->flush->step == F_DATA && !img->writes_inflight)
		advance(img->flush);
}

static struct uq_flush *start(uq_image *img, struct uq_done *d, bool tables)
{
	struct uq_flush *fl = calloc(1, sizeof(*fl));

	if (!fl)
		return NULL;
	fl->b.img = img;
	fl->b.idle = batch_idle;
	fl->d = d;
	fl->tables = tables;
	img->flush = fl;
	advance(fl);
	return fl;
}

int uq_flush_start(uq_image *img, struct uq_done *d)
{
	return start(img, d, false) ? 0 : -ENOMEM;
}

int uq_flush_settle(uq_image *img)
{
	while (img->flush) {
		int ret = io_reap(img->ctx->q, 1);

		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The chain run to its end while the caller waits. */
static int run_waiting(uq_image *img, bool tables)
{
	struct uq_flush *fl;
	int ret = uq_flush_settle(img);

	if (ret < 0)
		return ret;
	fl = start(img, NULL, tables);
	if (!fl)
		return -ENOMEM;
	while (!fl->done) {
		ret = io_reap(img->ctx->q, 1);
		if (ret < 0) {
			fl->orphan = true;   /* requests in flight still point at it */
			uq_stop_writes(img, "waiting for a flush failed");
			return ret;
		}
	}
	ret = fl->err;
	free(fl);
	return ret;
}

/* Data, then refcount increases, then L2 tables, then L1, then the
 * refcount decreases of what the new L2 entries no longer reference. */
int uq_meta_flush(uq_image *img)
{
	return run_waiting(img, false);
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
	return frees_over(img) ? uq_meta_flush(img) : run_waiting(img, true);
}
