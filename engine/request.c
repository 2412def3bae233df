// SPDX-License-Identifier: MIT
/* Guest write requests: checks, splitting into cluster pieces, the
 * asynchronous calls of the API and their synchronous wrappers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "error.h"
#include "request.h"
#include "stats.h"

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }


enum wkind { W_DATA, W_ZERO, W_DISCARD, W_FLUSH };


static int check_writable(uq_image *img, uint64_t off, uint64_t len)
{
	if (!(img->flags & UQ_OPEN_RDWR))
		return uq_seterr(-EROFS, "%s: image is open read-only", img->path);
	if (img->fmt == UQ_FMT_QCOW2 && !img->writable)
		return uq_seterr(-EROFS, "%s: no more writes: %s", img->path,
				 img->stop_reason ? img->stop_reason : "not open for writing");
	if (off > img->size || img->size - off < len)
		return uq_seterr(-EINVAL, "%s: write at 0x%llx+%llu is past the virtual "
				 "size %llu", img->path, (unsigned long long)off,
				 (unsigned long long)len, (unsigned long long)img->size);
	return 0;
}

static void count_request(struct uq_ctx *ctx, enum wkind kind, uint64_t len)
{
	static const enum uq_stat ops[] = {
		[W_DATA] = UQ_STAT_REQ_WRITE_OPS, [W_ZERO] = UQ_STAT_REQ_ZERO_OPS,
		[W_DISCARD] = UQ_STAT_REQ_DISCARD_OPS,
	};

	if (kind == W_FLUSH) {
		uq_count(ctx, UQ_STAT_REQ_FLUSH_OPS, 1);
		return;
	}

	/* each *_OPS is followed by its *_BYTES */
	uq_count(ctx, ops[kind], 1);
	uq_count(ctx, ops[kind] + 1, len);
}

/* A request that came while a flush was in flight: it goes out, in the
 * order it came, once no flush is (resume). */
struct uq_deferred {
	struct uq_deferred *next;
	enum wkind kind;
	const uint8_t *buf;
	uint64_t len, off;
	unsigned flags;
	uq_done_fn cb;
	void *arg;
};

static bool busy(const uq_image *img)
{
	return img->flush || img->deferred;
}

static int defer(uq_image *img, enum wkind kind, const uint8_t *buf, uint64_t len,
		 uint64_t off, unsigned flags, uq_done_fn cb, void *arg)
{
	struct uq_deferred *dr = calloc(1, sizeof(*dr));

	if (!dr)
		return -ENOMEM;
	*dr = (struct uq_deferred){ .kind = kind, .buf = buf, .len = len, .off = off,
				    .flags = flags, .cb = cb, .arg = arg };
	if (!img->deferred)
		img->deferred_tail = &img->deferred;
	*img->deferred_tail = dr;
	img->deferred_tail = &dr->next;
	return 0;
}

static int submit_now(uq_image *img, enum wkind kind, const uint8_t *buf, uint64_t len,
		      uint64_t off, unsigned flags, uq_done_fn cb, void *arg)
{
	struct wreq *wr;
	uint64_t unit, done = 0;
	int ret = check_writable(img, off, len);

	if (ret < 0)
		return ret;
	/* before any piece is acknowledged; in memory, written back on close */
	uq_bm_dirty(img, off, len);
	wr = calloc(1, sizeof(*wr));
	if (wr)
		wr->d = calloc(1, sizeof(*wr->d));
	if (!wr || !wr->d) {
		free(wr);
		return -ENOMEM;
	}
	wr->img = img;
	wr->d->cb = cb;
	wr->d->arg = arg;
	wr->d->ctx = img->ctx;
	wr->len = (size_t)len;
	wr->pending = 1;
	unit = img->fmt == UQ_FMT_QCOW2 ? csz(img) : (1u << 20);
	while (done < len && ret == 0) {
		uint64_t pos = off + done;
		size_t n = (size_t)(unit - (pos & (unit - 1)));

		if (n > len - done)
			n = (size_t)(len - done);
		if (img->fmt != UQ_FMT_QCOW2) {
			/* raw: plain file I/O */
			ret = kind == W_DATA ? uq_write_in_place(wr, buf + done, n, pos) : 0;
			if (kind == W_ZERO) {
				uint8_t *z = calloc(1, n);

				if (z)
					uq_count_data(img->ctx, true, n);
				ret = z ? io_pwrite_full(img->data, z, n, pos) : -ENOMEM;
				free(z);
			}
		} else if (kind == W_DATA && (flags & UQ_WRITE_COMPRESSED)) {
			ret = uq_write_compressed(wr, buf + done, pos, n);
		} else if (kind == W_DATA) {
			ret = uq_write_piece(wr, buf + done, pos, n);
		} else if (kind == W_ZERO) {
			ret = uq_zero_piece(wr, pos, n, flags);
		} else {
			uint64_t span = uq_discard_table_span(img, pos, len - done);

			if (span) {
				n = (size_t)span;
				ret = uq_discard_table(img, pos);
			} else {
				ret = uq_discard_piece(wr, pos, n);
			}
		}
		done += n;
	}
	if (kind == W_DISCARD) {
		int pret = uq_punch_kept_flush(wr);

		if (ret == 0)
			ret = pret;
	}
	if (ret < 0) {
		wr->err = ret;
		if (ret == -EIO)
			uq_stop_writes(img, "an I/O error hit a write");
	}
	uq_wreq_put(wr);
	return 0;
}

static int submit(uq_image *img, enum wkind kind, const uint8_t *buf, uint64_t len,
		  uint64_t off, unsigned flags, uq_done_fn cb, void *arg)
{
	int ret;

	uq_errclear();   /* a failure below must not show an older message */
	ret = check_writable(img, off, len);
	if (ret < 0)
		return ret;
	count_request(img->ctx, kind, len);
	if (img->fmt == UQ_FMT_QCOW2 && busy(img))
		return defer(img, kind, buf, len, off, flags, cb, arg);
	return submit_now(img, kind, buf, len, off, flags, cb, arg);
}

int uq_aio_write_impl(uq_image *img, const void *buf, size_t len, uint64_t off,
		 unsigned flags, uq_done_fn cb, void *arg)
{
	return submit(img, W_DATA, buf, len, off, flags, cb, arg);
}

int uq_aio_write_zeroes_impl(uq_image *img, uint64_t off, uint64_t len, unsigned flags,
			uq_done_fn cb, void *arg)
{
	return submit(img, W_ZERO, NULL, len, off, flags, cb, arg);
}

int uq_aio_discard_impl(uq_image *img, uint64_t off, uint64_t len, uq_done_fn cb, void *arg)
{
	return submit(img, W_DISCARD, NULL, len, off, 0, cb, arg);
}

/* Report res for a request that never went out (0 or -ENOMEM). */
static int complete_now(uq_image *img, uq_done_fn cb, void *arg, ssize_t res)
{
	struct uq_done *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	*d = (struct uq_done){ .cb = cb, .arg = arg, .ctx = img->ctx, .res = res };
	uq_ctx_complete(img->ctx, d);
	return 0;
}

/* A flush: of a raw file, one fdatasync behind what is queued; of a
 * qcow2 image, the chain of writeback.c, started now or, behind another
 * flush or deferred requests, when they have gone out. */
struct raw_flush {
	struct io_req io;
	struct uq_done *d;
};

static void raw_flush_done(struct io_req *io, ssize_t res)
{
	struct raw_flush *rf = (struct raw_flush *)io;

	rf->d->res = res < 0 ? res : 0;
	uq_ctx_complete(rf->d->ctx, rf->d);
	free(rf);
}

static int flush_now(uq_image *img, uq_done_fn cb, void *arg)
{
	struct uq_done *d = calloc(1, sizeof(*d));
	int ret = 0;

	if (!d)
		return -ENOMEM;
	*d = (struct uq_done){ .cb = cb, .arg = arg, .ctx = img->ctx };
	if (img->fmt != UQ_FMT_QCOW2) {
		struct raw_flush *rf = calloc(1, sizeof(*rf));

		if (!rf) {
			free(d);
			return -ENOMEM;
		}
		rf->d = d;
		rf->io = (struct io_req){ .op = IO_FSYNC, .file = img->file, .done = raw_flush_done };
		io_queue_req(img->ctx->q, &rf->io);
		return 0;
	}
	if (!img->writable)
		ret = uq_seterr(-EIO, "%s: image can't be written", img->path);
	else
		ret = uq_flush_start(img, d);
	if (ret < 0)
		free(d);
	return ret;
}

int uq_aio_flush_impl(uq_image *img, uq_done_fn cb, void *arg)
{
	uq_errclear();
	if (!(img->flags & UQ_OPEN_RDWR))
		return complete_now(img, cb, arg, 0);
	count_request(img->ctx, W_FLUSH, 0);
	if (img->fmt == UQ_FMT_QCOW2 && busy(img))
		return defer(img, W_FLUSH, NULL, 0, 0, 0, cb, arg);
	return flush_now(img, cb, arg);
}

/* Send the deferred requests out, in order, while no flush is in flight
 * (a deferred flush starts one, and what follows it waits again). One
 * that fails to go out completes with its error. */
static void resume(uq_image *img)
{
	struct uq_deferred *dr;

	while (!img->flush && (dr = img->deferred)) {
		int ret;

		img->deferred = dr->next;
		if (dr->kind == W_FLUSH)
			ret = flush_now(img, dr->cb, dr->arg);
		else
			ret = submit_now(img, dr->kind, dr->buf, dr->len, dr->off, dr->flags,
					 dr->cb, dr->arg);
		if (ret < 0 && complete_now(img, dr->cb, dr->arg, ret) < 0)
			uq_stop_writes(img, "out of memory reporting a failed request");
		free(dr);
	}
}

int uq_settle(uq_image *img)
{
	int ret = 0;

	while (ret == 0 && busy(img)) {
		ret = uq_flush_settle(img);
		if (ret == 0)
			resume(img);
	}
	return ret;
}

int uq_poll_impl(uq_image *img, unsigned min_complete)
{
	unsigned n = 0;

	for (;;) {
		int ret;

		resume(img);
		ret = uq_ctx_poll(img->ctx, min_complete > n ? min_complete - n : 0);
		if (ret < 0)
			return ret;
		n += (unsigned)ret;
		/* again only when a flush finished in there and left requests */
		if (!img->deferred || img->flush)
			break;
		if (min_complete && n >= min_complete) {
			/* send them, and report those refused now, while their
			 * message is the thread's */
			resume(img);
			ret = uq_ctx_poll(img->ctx, 0);
			if (ret < 0)
				return ret;
			n += (unsigned)ret;
			break;
		}
	}
	return (int)n;
}

static int wait_flag(uq_image *img, struct uq_sync *f)
{
	while (!f->done) {
		int ret = uq_poll_impl(img, 1);

		if (ret < 0)
			return ret;
		if (ret == 0 && !f->done)
			return uq_seterr(-EIO, "%s: request stalled", img->path);
	}
	return 0;
}

ssize_t uq_pwrite_impl(uq_image *img, const void *buf, size_t len, uint64_t off, unsigned flags)
{
	struct uq_sync f = { 0 };
	int ret = uq_aio_write_impl(img, buf, len, off, flags, uq_sync_done, &f);

	if (ret == 0)
		ret = wait_flag(img, &f);
	return ret < 0 ? ret : f.res;
}

int uq_write_zeroes_impl(uq_image *img, uint64_t off, uint64_t len, unsigned flags)
{
	struct uq_sync f = { 0 };
	int ret = uq_aio_write_zeroes_impl(img, off, len, flags, uq_sync_done, &f);

	if (ret == 0)
		ret = wait_flag(img, &f);
	return ret < 0 ? ret : f.res < 0 ? (int)f.res : 0;
}

int uq_discard_impl(uq_image *img, uint64_t off, uint64_t len)
{
	struct uq_sync f = { 0 };
	int ret = uq_aio_discard_impl(img, off, len, uq_sync_done, &f);

	if (ret == 0)
		ret = wait_flag(img, &f);
	return ret < 0 ? ret : f.res < 0 ? (int)f.res : 0;
}

int uq_flush_impl(uq_image *img)
{
	struct uq_sync f = { 0 };
	int ret = uq_aio_flush_impl(img, uq_sync_done, &f);

	if (ret == 0)
		ret = wait_flag(img, &f);
	return ret < 0 ? ret : f.res < 0 ? (int)f.res : 0;
}
