// SPDX-License-Identifier: MIT
/* Metadata requests of one writeback step, on the image's queue. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "batch.h"
#include "stats.h"

struct breq {
	struct io_req io;         /* first: the completion gets a struct breq */
	struct uq_batch *b;
	enum uq_mkind kind;
	void *own;
	uint64_t *mark, marked;
};

static void breq_done(struct io_req *io, ssize_t res)
{
	struct breq *r = (struct breq *)io;
	struct uq_batch *b = r->b;

	if (res < 0 && !b->err)
		b->err = (int)res;
	if (res >= 0 && r->io.op == IO_WRITE && r->kind == UQ_MK_L2)
		l2c_clean(b->img->l2c, r->io.off);
	if (res >= 0 && r->mark)
		*r->mark = r->marked;
	free(r->own);
	free(r);
	if (--b->pending == 0 && b->idle)
		b->idle(b);
}

static int queue(struct uq_batch *b, struct io_req io, enum uq_mkind k, void *own,
		 uint64_t *mark, uint64_t marked)
{
	struct breq *r = calloc(1, sizeof(*r));

	if (!r) {
		free(own);
		return -ENOMEM;
	}
	r->io = io;
	r->io.done = breq_done;
	r->b = b;
	r->kind = k;
	r->own = own;
	r->mark = mark;
	r->marked = marked;
	b->pending++;
	io_queue_req(b->img->ctx->q, &r->io);
	return 0;
}

int uq_batch_write(struct uq_batch *b, enum uq_mkind k, const void *buf, size_t len,
		   uint64_t off, void *own)
{
	if (!len) {
		free(own);
		return 0;
	}
	uq_count_meta(b->img->ctx, k, true, len);
	return queue(b, (struct io_req){ .op = IO_WRITE, .file = b->img->file,
					 .buf = (void *)buf, .len = len, .off = off },
		     k, own, NULL, 0);
}

int uq_batch_write64(struct uq_batch *b, enum uq_mkind k, uint64_t off, const uint64_t *t,
		     uint64_t n, uint64_t bytes)
{
	uint8_t *raw;
	int ret = uq_table64_encode(t, n, bytes, &raw);

	if (ret < 0 || !raw)
		return ret;
	return uq_batch_write(b, k, raw, (size_t)bytes, off, raw);
}

int uq_batch_punch(struct uq_batch *b, struct io_file *f, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	return queue(b, (struct io_req){ .op = IO_PUNCH, .file = f, .off = off,
					 .len = (size_t)len }, UQ_MK_DATA, NULL, NULL, 0);
}

int uq_batch_fsync(struct uq_batch *b, struct io_file *f, uint64_t *mark, uint64_t marked)
{
	return queue(b, (struct io_req){ .op = IO_FSYNC, .file = f }, UQ_MK_DATA, NULL, mark,
		     marked);
}
