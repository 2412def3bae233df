// SPDX-License-Identifier: MIT
/* The asynchronous read path: a guest read is split into cluster pieces,
 * each resolved through the L2 cache (parked on a miss) and served from the
 * data file, zeros, a compressed cluster or the backing image. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "error.h"
#include "internal.h"
#include "stats.h"

#define MAX_REQUEST (64u << 20)     /* bounds the piece array of one request */
#define RAW_PIECE (1u << 20)        /* raw images are read in 1 MiB pieces */

struct rreq;

struct piece {
	struct l2_waiter w;         /* parked on an L2 miss */
	struct rreq *rq;
	uint64_t off;               /* guest offset */
	size_t len;
	uint8_t *buf;
	struct io_req io;           /* the L2 fill, then the first data read */
	bool io_busy;
};

/* A data read of a piece beyond its first, or a compressed cluster read. */
struct op {
	struct io_req io;
	struct rreq *rq;
	uint8_t *cbuf;              /* compressed bytes (compressed ops) */
	uint8_t *dst;               /* where the wanted part of the cluster goes */
	size_t intra, len;
};

struct rreq {
	uq_image *img;
	struct uq_ctx *ctx;         /* the queue this request runs on */
	void (*done)(void *arg, ssize_t res);
	void *arg;
	size_t len;
	unsigned pending;           /* parts not finished, +1 while setting up */
	int err;
	size_t npieces;
	struct piece pieces[];
};

static void rreq_put(struct rreq *rq)
{
	if (--rq->pending)
		return;
	rq->done(rq->arg, rq->err ? rq->err : (ssize_t)rq->len);
	free(rq);
}

static void rreq_fail(struct rreq *rq, int err)
{
	if (!rq->err)
		rq->err = err;
}

/* ---- data, zeros and backing ---- */

static void data_done(struct io_req *io, ssize_t res)
{
	struct rreq *rq;

	struct op *op = io->priv;        /* set for a struct op, NULL in a piece */

	rq = op ? op->rq : ((struct piece *)((char *)io - offsetof(struct piece, io)))->rq;
	if (res < 0)
		rreq_fail(rq, (int)res);
	else if ((size_t)res != io->len)
		rreq_fail(rq, -EIO);
	free(op);                        /* io lives inside op */
	rreq_put(rq);
}

static void read_data(struct piece *p, uint8_t *buf, size_t len, uint64_t host)
{
	struct rreq *rq = p->rq;
	struct io_req *io;

	if (!p->io_busy) {
		p->io_busy = true;
		io = &p->io;
		io->priv = NULL;
	} else {
		struct op *op = calloc(1, sizeof(*op));

		if (!op) {
			rreq_fail(rq, -ENOMEM);
			return;
		}
		op->rq = rq;
		io = &op->io;
		io->priv = op;
	}
	rq->pending++;
	io->op = IO_READ;
	io->file = rq->img->data;
	io->buf = buf;
	io->len = len;
	io->off = host;
	io->done = data_done;
	uq_count_data(rq->ctx, false, len);
	io_queue_req(rq->ctx->q, io);
}

static void child_done(void *arg, ssize_t res)
{
	struct rreq *rq = arg;

	if (res < 0)
		rreq_fail(rq, (int)res);
	rreq_put(rq);
}

/* Unallocated: the backing image's content, zeros past its end. */
static void read_backing(struct piece *p, uint8_t *buf, size_t len, uint64_t off)
{
	struct rreq *rq = p->rq;
	uq_image *b = rq->img->backing;
	size_t in = 0;
	int ret;

	if (b && off < b->size)
		in = b->size - off < len ? (size_t)(b->size - off) : len;
	if (in) {
		rq->pending++;
		ret = uq_read_start(b, rq->ctx, buf, in, off, child_done, rq);
		if (ret < 0) {
			rreq_fail(rq, ret);
			rq->pending--;
		}
	}
	memset(buf + in, 0, len - in);
}

/* A cluster-sized buffer of the queue's, for a partial compressed read. */
static uint8_t *ctx_scratch(struct uq_ctx *ctx, size_t len)
{
	if (ctx->scratch_len < len) {
		free(ctx->scratch);
		ctx->scratch_len = 0;
		ctx->scratch = malloc(len);
		if (!ctx->scratch)
			return NULL;
		ctx->scratch_len = len;
	}
	return ctx->scratch;
}

void uq_ctx_release(struct uq_ctx *ctx)
{
	uq_codec_free(ctx->codec);
	ctx->codec = NULL;
	free(ctx->scratch);
	ctx->scratch = NULL;
	ctx->scratch_len = 0;
}

static void compressed_done(struct io_req *io, ssize_t res)
{
	struct op *op = io->priv;
	struct rreq *rq = op->rq;
	uq_image *img = rq->img;
	size_t cs = img->g.cluster_size;
	uint8_t *cluster = op->dst;
	int ret = res < 0 ? (int)res : 0;

	/* a whole cluster is inflated in place, a part through scratch */
	if (!ret && op->len != cs && !(cluster = ctx_scratch(rq->ctx, cs)))
		ret = -ENOMEM;
	if (!ret)
		ret = uq_decompress(&rq->ctx->codec, img->h.compression_type,
				    op->cbuf, io->len, cluster, cs);
	if (!ret && cluster != op->dst)
		memcpy(op->dst, cluster + op->intra, op->len);
	else if (ret)
		rreq_fail(rq, ret == -ENOMEM ? ret : -EIO);
	free(op->cbuf);
	free(op);
	rreq_put(rq);
}

static void read_compressed(struct piece *p, const struct uq_l2map *m)
{
	struct rreq *rq = p->rq;
	struct op *op = calloc(1, sizeof(*op));

	if (op)
		op->cbuf = malloc(m->comp_len);
	if (!op || !op->cbuf) {
		free(op);
		rreq_fail(rq, -ENOMEM);
		return;
	}
	op->rq = rq;
	op->dst = p->buf;
	op->intra = (size_t)(p->off & (rq->img->g.cluster_size - 1));
	op->len = p->len;
	op->io = (struct io_req){ .op = IO_READ, .file = rq->img->file, .buf = op->cbuf,
				  .len = (size_t)m->comp_len, .off = m->comp_off,
				  .done = compressed_done, .priv = op };
	rq->pending++;
	uq_count_data(rq->ctx, false, m->comp_len);
	io_queue_req(rq->ctx->q, &op->io);
}

/* Extended L2: runs of subclusters with the same state. */
static void read_subclusters(struct piece *p, const struct uq_l2map *m)
{
	const struct uq_geom *g = &p->rq->img->g;
	uint64_t cmask = g->cluster_size - 1;
	size_t done = 0;

	while (done < p->len) {
		uint64_t off = p->off + done;
		unsigned sc = (unsigned)((off & cmask) >> g->subcluster_bits);
		int state = (m->alloc_mask >> sc & 1) ? 1 : (m->zero_mask >> sc & 1) ? 2 : 0;
		size_t run = 0;

		/* extend the run while the next subclusters share its state */
		for (unsigned i = sc; i < 32; i++) {
			int st = (m->alloc_mask >> i & 1) ? 1 : (m->zero_mask >> i & 1) ? 2 : 0;

			if (st != state)
				break;
			run = (size_t)(((uint64_t)(i + 1) << g->subcluster_bits) - (off & cmask));
		}
		if (run > p->len - done)
			run = p->len - done;
		if (state == 1)
			read_data(p, p->buf + done, run, m->host_off + (off & cmask));
		else if (state == 2)
			memset(p->buf + done, 0, run);
		else
			read_backing(p, p->buf + done, run, off);
		done += run;
	}
}

static void serve(struct piece *p, const struct uq_l2map *m)
{
	uint64_t intra = p->off & (p->rq->img->g.cluster_size - 1);

	switch (m->type) {
	case UQ_C_NORMAL:
		read_data(p, p->buf, p->len, m->host_off + intra);
		break;
	case UQ_C_ZERO:
		memset(p->buf, 0, p->len);
		break;
	case UQ_C_UNALLOC:
		read_backing(p, p->buf, p->len, p->off);
		break;
	case UQ_C_COMPRESSED:
		read_compressed(p, m);
		break;
	case UQ_C_SUBCLUSTERS:
		read_subclusters(p, m);
		break;
	}
}

/* ---- L2 resolution ---- */

/* L1 lookup for the cluster holding guest offset off: *l2_off = 0 if the
 * L2 table is unallocated. Validates the entry and the table's place. */
static int l2_table_of(uq_image *img, uint64_t off, uint64_t *l2_off)
{
	uint64_t l1i = uq_cluster_of(img, off) >> img->g.l2_bits;
	bool copied;
	int ret;

	*l2_off = 0;
	if (l1i >= img->h.l1_size)
		return 0;
	ret = uq_l1_decode(&img->g, img->l1[l1i], l2_off, &copied);
	if (ret < 0)
		return uq_seterr(ret, "%s: l1 entry %llu: %s", img->path,
				 (unsigned long long)l1i, uq_errmsg());
	if (*l2_off && *l2_off < img->g.cluster_size)
		return uq_seterr(-EIO, "%s: l1 entry %llu: L2 table overlaps the header",
				 img->path, (unsigned long long)l1i);
	/* a writer's new tables may lie past the size the file had at open */
	uint64_t end = img->alloc.host_end > img->file_size ? img->alloc.host_end : img->file_size;

	if (*l2_off && (*l2_off > end || end - *l2_off < img->g.cluster_size))
		return uq_seterr(-EIO, "%s: l1 entry %llu: L2 table at 0x%llx lies past "
				 "the end of the file", img->path, (unsigned long long)l1i,
				 (unsigned long long)*l2_off);
	return 0;
}

static uint64_t l2_index(const uq_image *img, uint64_t off)
{
	return uq_cluster_of(img, off) & (img->g.l2_entries - 1);
}

static unsigned l2_words(const uq_image *img)
{
	return img->g.extended_l2 ? 2 : 1;
}

static int decode_entry(uq_image *img, const uint64_t e[2], uint64_t off,
			struct uq_l2map *m)
{
	int ret = uq_l2_decode(&img->g, e[0], img->g.extended_l2 ? e[1] : 0, m);

	if (ret < 0)
		return uq_seterr(ret, "%s: l2 entry for guest offset 0x%llx: %s", img->path,
				 (unsigned long long)off, uq_errmsg());
	return 0;
}

static void piece_resolve(struct piece *p);

static void piece_woken(struct l2_waiter *w, int err)
{
	struct piece *p = (struct piece *)w;

	if (err < 0) {
		rreq_fail(p->rq, err);
		rreq_put(p->rq);
		return;
	}
	piece_resolve(p);
}

static void fill_done(struct io_req *io, ssize_t res)
{
	struct piece *p = (struct piece *)((char *)io - offsetof(struct piece, io));
	int err = res < 0 ? (int)res : (size_t)res != io->len ? -EIO : 0;

	if (err)
		uq_seterr(err, "%s: reading L2 table at 0x%llx failed", p->rq->img->path,
			  (unsigned long long)io->off);
	/* wakes p itself first, then the others */
	l2c_fill_done(p->rq->img->l2c, io->off, err);
}

static void piece_resolve(struct piece *p)
{
	uq_image *img = p->rq->img;
	uint64_t l2_off, e[2] = { 0, 0 };
	uint8_t *fill;
	struct uq_l2map m;
	int ret;

	ret = l2_table_of(img, p->off, &l2_off);
	if (ret < 0)
		goto fail;
	if (!l2_off) {
		read_backing(p, p->buf, p->len, p->off);
		rreq_put(p->rq);
		return;
	}
	ret = l2c_get(img->l2c, l2_off, l2_index(img, p->off), l2_words(img), e, &p->w, &fill);
	if (ret < 0)
		goto fail;
	if (ret == L2C_WAIT)
		return;
	uq_count(p->rq->ctx, ret == L2C_FILL ? UQ_STAT_L2_MISSES : UQ_STAT_L2_HITS, 1);
	if (ret == L2C_FILL) {
		uq_count_meta(p->rq->ctx, UQ_MK_L2, false, img->g.cluster_size);
		if (l2c_shared(img->l2c)) {
			/* other threads may wait on this table: never make them
			 * depend on our event loop */
			ret = io_pread_full(img->file, fill, (size_t)img->g.cluster_size, l2_off);
			l2c_fill_done(img->l2c, l2_off, ret);   /* wakes p */
			return;
		}
		p->io = (struct io_req){ .op = IO_READ, .file = img->file, .buf = fill,
					 .len = (size_t)img->g.cluster_size, .off = l2_off,
					 .done = fill_done };
		io_queue_req(p->rq->ctx->q, &p->io);
		return;
	}
	ret = decode_entry(img, e, p->off, &m);
	if (ret < 0)
		goto fail;
	serve(p, &m);
	rreq_put(p->rq);
	return;
fail:
	rreq_fail(p->rq, ret);
	rreq_put(p->rq);
}

/* ---- requests ---- */

int uq_read_start(uq_image *img, struct uq_ctx *ctx, void *buf, size_t len, uint64_t off,
		  void (*done)(void *arg, ssize_t res), void *arg)
{
	uint64_t unit = img->fmt == UQ_FMT_QCOW2 ? img->g.cluster_size : RAW_PIECE;
	uint64_t first = off / unit, last;
	struct rreq *rq;
	size_t n;

	if (len > MAX_REQUEST)
		return uq_seterr(-EINVAL, "read of %zu bytes exceeds %u", len, MAX_REQUEST);
	if (off > img->size || img->size - off < len)
		return uq_seterr(-EINVAL, "%s: read at 0x%llx+%zu is past the virtual size",
				 img->path, (unsigned long long)off, len);
	last = len ? (off + len - 1) / unit : first;
	n = len ? (size_t)(last - first + 1) : 0;
	rq = calloc(1, sizeof(*rq) + n * sizeof(struct piece));
	if (!rq)
		return -ENOMEM;
	rq->img = img;
	rq->ctx = ctx;
	rq->done = done;
	rq->arg = arg;
	rq->len = len;
	rq->npieces = n;
	rq->pending = 1 + (unsigned)n;   /* the guard drops after setup */
	for (size_t i = 0; i < n; i++) {
		struct piece *p = &rq->pieces[i];
		uint64_t start = i ? (first + i) * unit : off;
		uint64_t end = (first + i + 1) * unit;

		if (end > off + len)
			end = off + len;
		p->rq = rq;
		p->off = start;
		p->len = (size_t)(end - start);
		p->buf = (uint8_t *)buf + (start - off);
		p->w.wake = piece_woken;
	}
	for (size_t i = 0; i < n; i++) {
		struct piece *p = &rq->pieces[i];

		if (img->fmt == UQ_FMT_QCOW2) {
			piece_resolve(p);
		} else {
			read_data(p, p->buf, p->len, p->off);
			rreq_put(rq);
		}
	}
	rreq_put(rq);
	return 0;
}

void uq_ctx_complete(struct uq_ctx *ctx, struct uq_done *d)
{
	d->next = NULL;
	*ctx->done_tail = d;
	ctx->done_tail = &d->next;
}

static void user_done(void *arg, ssize_t res)
{
	struct uq_done *d = arg;

	d->res = res;
	/* Reported from uq_poll, never from inside uq_aio_read. */
	uq_ctx_complete(d->ctx, d);
}

/* A caller's read on one context (the image's, or a queue's): its
 * completion is delivered by that context's poll. */
static int user_read(uq_image *img, struct uq_ctx *ctx, void *buf, size_t len, uint64_t off,
		     uq_done_fn cb, void *arg)
{
	struct uq_done *d = calloc(1, sizeof(*d));
	int ret;

	if (!d)
		return -ENOMEM;
	d->cb = cb;
	d->arg = arg;
	d->ctx = ctx;
	uq_count(ctx, UQ_STAT_REQ_READ_OPS, 1);
	uq_count(ctx, UQ_STAT_REQ_READ_BYTES, len);
	ret = uq_read_start(img, ctx, buf, len, off, user_done, d);
	if (ret < 0)
		free(d);
	return ret;
}

int uq_aio_read_impl(uq_image *img, void *buf, size_t len, uint64_t off,
		uq_done_fn cb, void *arg)
{
	return user_read(img, img->ctx, buf, len, off, cb, arg);
}

static unsigned deliver(struct uq_ctx *ctx)
{
	unsigned n = 0;

	while (ctx->done_head) {
		struct uq_done *d = ctx->done_head;

		ctx->done_head = d->next;
		if (!ctx->done_head)
			ctx->done_tail = &ctx->done_head;
		ctx->completed++;
		n++;
		d->cb(d->arg, d->res);
		free(d);
	}
	return n;
}

int uq_ctx_poll(struct uq_ctx *ctx, unsigned min_complete)
{
	unsigned n = deliver(ctx);
	int ret;

	if (min_complete == 0) {
		ret = io_reap(ctx->q, 0);
		if (ret < 0)
			return ret;
		return (int)(n + deliver(ctx));
	}
	while (n < min_complete) {
		if (!io_pending(ctx->q))
			break;           /* nothing in flight can complete anything */
		ret = io_reap(ctx->q, 1);
		if (ret < 0)
			return ret;
		n += deliver(ctx);
	}
	return (int)n;
}

void uq_sync_done(void *arg, ssize_t res)
{
	struct uq_sync *w = arg;

	w->done = true;
	w->res = res;
}

ssize_t uq_pread_impl(uq_image *img, void *buf, size_t len, uint64_t off)
{
	size_t total = 0;

	while (total < len) {
		size_t chunk = len - total > MAX_REQUEST ? MAX_REQUEST : len - total;
		struct uq_sync w = { 0 };
		int ret;

		ret = uq_aio_read_impl(img, (uint8_t *)buf + total, chunk, off + total, uq_sync_done, &w);
		if (ret < 0)
			return ret;
		while (!w.done) {
			ret = uq_ctx_poll(img->ctx, 1);
			if (ret < 0)
				return ret;
			if (ret == 0 && !w.done)
				return uq_seterr(-EIO, "%s: read stalled", img->path);
		}
		if (w.res < 0)
			return w.res;
		total += chunk;
	}
	return (ssize_t)total;
}

/* ---- synchronous lookups for map and check ---- */

struct uq_syncer {
	struct l2_waiter w;
	bool woken;
	int err;
};

static void sync_woken(struct l2_waiter *w, int err)
{
	struct uq_syncer *s = (struct uq_syncer *)w;

	s->woken = true;
	s->err = err;
}

int uq_l2_entry_sync(uq_image *img, uint64_t l2_off, uint64_t idx, uint64_t e[2])
{
	struct uq_syncer sw = { .w.wake = sync_woken };
	uint8_t *fill;
	int ret;

	for (;;) {
		ret = l2c_get(img->l2c, l2_off, idx, l2_words(img), e, &sw.w, &fill);
		if (ret < 0)
			return ret;
		if (ret == L2C_HIT) {
			uq_count(img->ctx, UQ_STAT_L2_HITS, 1);
			return 0;
		}
		sw.woken = false;
		if (ret == L2C_FILL) {
			uq_count(img->ctx, UQ_STAT_L2_MISSES, 1);
			ret = uq_meta_pread(img, UQ_MK_L2, fill, (size_t)img->g.cluster_size, l2_off);
			l2c_fill_done(img->l2c, l2_off, ret);
			if (ret < 0)
				return uq_seterr(ret, "%s: reading L2 table at 0x%llx failed",
						 img->path, (unsigned long long)l2_off);
			continue;   /* a woken reader may have evicted it: look again */
		}
		/* another request is filling it: let the queue run */
		while (!sw.woken) {
			ret = io_reap(img->ctx->q, 1);
			if (ret < 0)
				return ret;
			if (ret == 0 && !sw.woken)
				return uq_seterr(-EIO, "%s: L2 fill stalled", img->path);
		}
		if (sw.err < 0)
			return sw.err;
	}
}

int uq_map_entry(uq_image *img, uint64_t off, struct uq_l2map *m)
{
	uint64_t l2_off, e[2] = { 0, 0 };
	int ret;

	memset(m, 0, sizeof(*m));
	m->type = UQ_C_UNALLOC;
	ret = l2_table_of(img, off, &l2_off);
	if (ret < 0 || !l2_off)
		return ret;
	ret = uq_l2_entry_sync(img, l2_off, l2_index(img, off), e);
	return ret < 0 ? ret : decode_entry(img, e, off, m);
}

int uq_map_table(uq_image *img, uint64_t off,
		 int (*fn)(uq_image *img, const struct uq_l2map *m, void *arg), void *arg,
		 uint64_t *table)
{
	uint64_t l2_off, span = (uint64_t)img->g.l2_entries << img->g.cluster_bits;
	uint64_t end = off + span < img->size ? off + span : img->size;
	unsigned words = l2_words(img);
	struct uq_l2map m;
	uint8_t *tab = NULL;
	int ret = l2_table_of(img, off, &l2_off);

	*table = ret < 0 ? 0 : l2_off;
	if (ret < 0 || !l2_off)
		return ret;
	/* not cached: read it around the cache, which keeps what it holds */
	if (!l2c_resident(img->l2c, l2_off)) {
		if (posix_memalign((void **)&tab, img->align, (size_t)img->g.cluster_size))
			return -ENOMEM;
		ret = uq_meta_pread(img, UQ_MK_L2, tab, (size_t)img->g.cluster_size, l2_off);
		if (ret < 0) {
			free(tab);
			return uq_seterr(ret, "%s: reading L2 table at 0x%llx failed", img->path,
					 (unsigned long long)l2_off);
		}
	}
	for (uint64_t g = off; g < end && ret == 0; g += img->g.cluster_size) {
		uint64_t idx = l2_index(img, g), e[2] = { 0, 0 };

		if (tab) {
			for (unsigned w = 0; w < words; w++)
				e[w] = uq_be64(tab + (idx * words + w) * 8);
		} else {
			ret = uq_l2_entry_sync(img, l2_off, idx, e);
		}
		if (ret == 0)
			ret = decode_entry(img, e, g, &m);
		if (ret == 0)
			ret = fn(img, &m, arg);
	}
	free(tab);
	return ret;
}

/* ---- per-thread queues ---- */

struct uq_queue {
	struct uq_ctx ctx;
	uq_image *img;
};

int uq_queue_create_impl(uq_image *img, unsigned depth, uq_queue **out)
{
	const char *force = io_backend_name(img->ctx->q);
	uq_queue *q = calloc(1, sizeof(*q));
	int ret;

	if (!q)
		return -ENOMEM;
	/* the same backend the image got, so results compare */
	ret = io_queue_create(force, depth ? depth : UQ_DEFAULT_QUEUE_DEPTH, &q->ctx.q);
	if (ret < 0) {
		free(q);
		return uq_seterr(ret, "%s: can't set up a %s queue", img->path, force);
	}
	q->ctx.done_tail = &q->ctx.done_head;
	q->img = img;
	uq_stats_queue_add(img, &q->ctx);
	/* from now on misses are filled synchronously, chain-wide */
	for (uq_image *i = img; i; i = i->backing)
		if (i->l2c)
			l2c_set_shared(i->l2c, true);
	*out = q;
	return 0;
}

void uq_queue_destroy_impl(uq_queue *q)
{
	if (!q)
		return;
	while (io_pending(q->ctx.q) && io_reap(q->ctx.q, 1) > 0)
		;
	while (q->ctx.done_head) {
		struct uq_done *d = q->ctx.done_head;

		q->ctx.done_head = d->next;
		free(d);
	}
	uq_ctx_release(&q->ctx);
	io_queue_free(q->ctx.q);
	uq_stats_queue_drop(q->img, &q->ctx);
	free(q);
}

int uq_queue_read_impl(uq_queue *q, void *buf, size_t len, uint64_t off,
		  uq_done_fn cb, void *arg)
{
	return user_read(q->img, &q->ctx, buf, len, off, cb, arg);
}

int uq_queue_poll_impl(uq_queue *q, unsigned min_complete)
{
	return uq_ctx_poll(&q->ctx, min_complete);
}

/* Read guest content without delivering user completions: copy-on-write
 * needs the old bytes while the caller is inside a submission. */
int uq_internal_pread(uq_image *img, void *buf, size_t len, uint64_t off)
{
	struct uq_sync f = { 0 };
	int ret = uq_read_start(img, img->ctx, buf, len, off, uq_sync_done, &f);

	while (ret == 0 && !f.done) {
		ret = io_reap(img->ctx->q, 1);
		if (ret == 0 && !f.done)
			return uq_seterr(-EIO, "%s: read stalled", img->path);
		ret = ret < 0 ? ret : 0;
	}
	return ret < 0 ? ret : f.res < 0 ? (int)f.res : 0;
}
