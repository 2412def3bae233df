// SPDX-License-Identifier: MIT
/* The accounting layer: a wrapper that counts every operation that reaches
 * its inner file, and forwards it. It keeps the inner file's kernel fd, so
 * io_uring still hands queued requests to the kernel; those never pass
 * through the ops, and the queue reports them through the observe op
 * instead (io_observe_kernel). Counters are atomic because queues on other
 * threads read the same file; a relaxed add costs one locked instruction
 * per operation, next to a system call or a memory copy. */
#include <errno.h>
#include <stdlib.h>

#include "io.h"

struct count_file {
	struct io_file f;    /* first: the wrapper is a struct io_file */
	struct io_counts c;
};

static struct io_counts *counts(struct io_file *f)
{
	return &((struct count_file *)f)->c;
}

static void add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void count_req(struct io_counts *c, enum io_op op, uint64_t len)
{
	switch (op) {
	case IO_READ:
		add(&c->v[IO_CNT_READ_OPS], 1);
		add(&c->v[IO_CNT_READ_BYTES], len);
		break;
	case IO_WRITE:
		add(&c->v[IO_CNT_WRITE_OPS], 1);
		add(&c->v[IO_CNT_WRITE_BYTES], len);
		break;
	case IO_FSYNC:
		add(&c->v[IO_CNT_SYNC_OPS], 1);
		break;
	case IO_PUNCH:
		add(&c->v[IO_CNT_PUNCH_OPS], 1);
		add(&c->v[IO_CNT_PUNCH_BYTES], len);
		break;
	}
}

static int count_read(struct io_file *f, void *buf, size_t len, uint64_t off)
{
	count_req(counts(f), IO_READ, len);
	return io_pread_full(f->inner, buf, len, off);
}

static int count_write(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	count_req(counts(f), IO_WRITE, len);
	return io_pwrite_full(f->inner, buf, len, off);
}

static int count_punch(struct io_file *f, uint64_t off, uint64_t len)
{
	count_req(counts(f), IO_PUNCH, len);
	return io_punch(f->inner, off, len);
}

static int count_fsync(struct io_file *f)
{
	count_req(counts(f), IO_FSYNC, 0);
	return io_fsync(f->inner);
}

static int count_truncate(struct io_file *f, uint64_t size)
{
	add(&counts(f)->v[IO_CNT_TRUNCATE_OPS], 1);
	return io_file_truncate(f->inner, size);
}

static int count_preallocate(struct io_file *f, uint64_t off, uint64_t len)
{
	add(&counts(f)->v[IO_CNT_FALLOC_OPS], 1);
	add(&counts(f)->v[IO_CNT_FALLOC_BYTES], len);
	return io_file_preallocate(f->inner, off, len);
}

static void count_observe(struct io_file *f, const struct io_req *r)
{
	count_req(counts(f), r->op, r->len);
}

static const struct io_file_ops count_ops = {
	.read = count_read,
	.write = count_write,
	.punch = count_punch,
	.fsync = count_fsync,
	.truncate = count_truncate,
	.preallocate = count_preallocate,
	.size = io_fwd_size,
	.allocated = io_fwd_allocated,
	.seek = io_fwd_seek,
	.identity = io_fwd_identity,
	.kernel_fd = io_fwd_kernel_fd,
	.observe = count_observe,
	.close = io_fwd_close,
};

int io_count_wrap(struct io_file *inner, struct io_file **out)
{
	struct count_file *cf = calloc(1, sizeof(*cf));

	if (!cf)
		return -ENOMEM;
	io_wrap_init(&cf->f, &count_ops, inner);
	*out = &cf->f;
	return 0;
}

const struct io_counts *io_counts_of(struct io_file *f)
{
	for (; f; f = f->inner)
		if (f->ops == &count_ops)
			return counts(f);
	return NULL;
}

void io_observe_kernel(const struct io_req *r)
{
	for (struct io_file *f = r->file; f; f = f->inner)
		if (f->ops->observe)
			f->ops->observe(f, r);
}
