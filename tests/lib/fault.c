// SPDX-License-Identifier: MIT
/* The fault-injection wrapper (SQLite's crash-simulation VFS wraps the real
 * one the same way): records each change made through it, fails changes on
 * demand, rebuilds crash states. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"

struct fault_file;

/* The record. It outlives its file: tests read it after the image closed. */
struct io_fault {
	struct fault_file *file;      /* recording it; NULL once detached or closed */
	struct io_fault_image base;   /* the file at the wrap */
	struct io_fault_op *ops;
	size_t nops, cap;
	uint64_t changes;             /* issued since the wrap, failed ones too */
	uint64_t failures;
	struct io_fault_op first_failure;
	uint64_t fail_at;             /* 0: never */
	int err;
	bool sticky;
};

/* ---- images ---- */

/* Room for len bytes; capacity doubles so replaying a log stays linear. */
static int image_reserve(struct io_fault_image *img, uint64_t len)
{
	size_t cap;
	uint8_t *p;

	if (len > SIZE_MAX / 2)
		return -ENOMEM;
	if (len <= img->cap)
		return 0;
	cap = img->cap < 4096 ? 4096 : img->cap;
	while (cap < len)
		cap *= 2;
	p = realloc(img->data, cap);
	if (!p)
		return -ENOMEM;
	img->data = p;
	img->cap = cap;
	return 0;
}

/* Set the length; what grows reads as zeros, as a file's tail does. */
static int image_set_len(struct io_fault_image *img, uint64_t len)
{
	int ret = image_reserve(img, len);

	if (ret < 0)
		return ret;
	if (len > img->len)
		memset(img->data + img->len, 0, (size_t)(len - img->len));
	img->len = len;
	return 0;
}

void io_fault_image_free(struct io_fault_image *img)
{
	free(img->data);
	*img = (struct io_fault_image){ 0 };
}

int io_fault_image_copy(const struct io_fault_image *src, struct io_fault_image *out)
{
	*out = (struct io_fault_image){ 0 };
	int ret = image_set_len(out, src->len);

	if (ret < 0)
		return ret;
	if (src->len)
		memcpy(out->data, src->data, (size_t)src->len);
	return 0;
}

int io_fault_image_base(const struct io_fault *fl, struct io_fault_image *out)
{
	return io_fault_image_copy(&fl->base, out);
}

uint64_t io_fault_op_sectors(const struct io_fault_op *op)
{
	uint64_t first, last;

	if (op->kind != IO_FAULT_WRITE && op->kind != IO_FAULT_PUNCH)
		return 1;
	if (!op->len)
		return 0;
	first = op->off / IO_FAULT_SECTOR;
	last = (op->off + op->len - 1) / IO_FAULT_SECTOR;
	return last - first + 1;
}

int io_fault_image_apply(struct io_fault_image *img, const struct io_fault_op *op,
			 uint64_t sectors)
{
	uint64_t end, cut;
	int ret;

	if (!sectors || op->kind == IO_FAULT_FLUSH)
		return 0;
	if (op->kind == IO_FAULT_TRUNCATE)
		return image_set_len(img, op->len);
	if (op->kind == IO_FAULT_PREALLOC)
		return op->off + op->len > img->len ? image_set_len(img, op->off + op->len) : 0;
	end = op->off + op->len;
	/* A torn write: the disk got the first sectors, counted at the
	 * device's sector boundaries, not from the start of the buffer. */
	if (sectors < io_fault_op_sectors(op)) {
		cut = (op->off / IO_FAULT_SECTOR + sectors) * IO_FAULT_SECTOR;
		if (cut < end)
			end = cut;
	}
	if (end <= op->off)
		return 0;
	if (op->kind == IO_FAULT_PUNCH) {
		/* a punch keeps the size: only what lies inside reads zeros */
		if (op->off < img->len)
			memset(img->data + op->off, 0,
			       (size_t)((end < img->len ? end : img->len) - op->off));
		return 0;
	}
	if (end > img->len) {
		ret = image_set_len(img, end);
		if (ret < 0)
			return ret;
	}
	memcpy(img->data + op->off, op->data, (size_t)(end - op->off));
	return 0;
}

int io_fault_crash_state(const struct io_fault *fl, size_t durable, const uint64_t *keep,
			 size_t nkeep, struct io_fault_image *out)
{
	int ret;

	if (durable > fl->nops || nkeep > fl->nops - durable)
		return -EINVAL;
	ret = io_fault_image_base(fl, out);
	for (size_t i = 0; ret == 0 && i < durable; i++)
		ret = io_fault_image_apply(out, &fl->ops[i], UINT64_MAX);
	for (size_t i = 0; ret == 0 && i < nkeep; i++)
		ret = io_fault_image_apply(out, &fl->ops[durable + i], keep[i]);
	if (ret < 0)
		io_fault_image_free(out);
	return ret;
}

/* ---- the record ---- */

struct fault_file {
	struct io_file file;          /* first: the ops get this */
	struct io_fault *fl;          /* NULL: detached, a plain pass-through */
};

static const struct io_file_ops fault_ops;

void io_fault_detach(struct io_fault *fl)
{
	if (fl && fl->file) {
		fl->file->fl = NULL;
		fl->file = NULL;
	}
}

void io_fault_free(struct io_fault *fl)
{
	if (!fl)
		return;
	io_fault_detach(fl);
	for (size_t i = 0; i < fl->nops; i++)
		free(fl->ops[i].data);
	free(fl->ops);
	io_fault_image_free(&fl->base);
	free(fl);
}

void io_fault_fail_at(struct io_fault *fl, uint64_t n, int err, bool sticky)
{
	fl->fail_at = n;
	fl->err = err < 0 ? err : -EIO;
	fl->sticky = sticky;
}

uint64_t io_fault_changes(const struct io_fault *fl)
{
	return fl->changes;
}

uint64_t io_fault_failures(const struct io_fault *fl)
{
	return fl->failures;
}

const struct io_fault_op *io_fault_first_failure(const struct io_fault *fl)
{
	return fl->failures ? &fl->first_failure : NULL;
}

size_t io_fault_nops(const struct io_fault *fl)
{
	return fl->nops;
}

const struct io_fault_op *io_fault_op(const struct io_fault *fl, size_t i)
{
	return i < fl->nops ? &fl->ops[i] : NULL;
}

/* Count one change; true when it is to fail instead of running. */
static bool must_fail(struct io_fault *fl, const struct io_fault_op *op)
{
	uint64_t n = ++fl->changes;
	bool fail = fl->fail_at && (n == fl->fail_at || (fl->sticky && n > fl->fail_at));

	if (fail && !fl->failures++) {
		fl->first_failure = *op;
		fl->first_failure.data = NULL;
	}
	return fail;
}

/* A slot for the next op, with a copy of a write's data taken up front:
 * once the change has run, the record can no longer fail to keep it. */
static int prepare(struct io_fault *fl, struct io_fault_op *op, const void *buf)
{
	if (fl->nops == fl->cap) {
		size_t cap = fl->cap ? fl->cap * 2 : 256;
		struct io_fault_op *p = realloc(fl->ops, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		fl->ops = p;
		fl->cap = cap;
	}
	op->data = NULL;
	if (op->kind == IO_FAULT_WRITE && op->len) {
		/* buf is the write's; checked so the copy never reads NULL */
		if (!buf)
			return -EINVAL;
		op->data = malloc((size_t)op->len);
		if (!op->data)
			return -ENOMEM;
		memcpy(op->data, buf, (size_t)op->len);
	}
	return 0;
}

/* The change op, on the inner file. */
static int run_inner(struct io_file *in, const struct io_fault_op *op, const void *buf)
{
	switch (op->kind) {
	case IO_FAULT_WRITE:
		return io_pwrite_full(in, buf, (size_t)op->len, op->off);
	case IO_FAULT_PUNCH:
		return io_punch(in, op->off, op->len);
	case IO_FAULT_TRUNCATE:
		return io_file_truncate(in, op->len);
	case IO_FAULT_FLUSH:
		return io_fsync(in);
	case IO_FAULT_PREALLOC:
		return io_file_preallocate(in, op->off, op->len);
	}
	return -EINVAL;
}

/* Count a change, fail it if its turn has come, else run it on the inner
 * file and record it if it landed. buf: a write's data. */
static int change(struct io_file *f, struct io_fault_op op, const void *buf)
{
	struct io_fault *fl = ((struct fault_file *)f)->fl;
	int ret;

	if (!fl)
		return run_inner(f->inner, &op, buf);
	if (must_fail(fl, &op))
		return fl->err;
	ret = prepare(fl, &op, buf);
	if (ret < 0)
		return ret;
	ret = run_inner(f->inner, &op, buf);
	if (ret < 0) {
		free(op.data);
		return ret;
	}
	fl->ops[fl->nops++] = op;
	return 0;
}

/* The dispatchers hand writes and punches over only when non-empty: each
 * one is a change to replay. */
static int fault_write(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	struct io_fault_op op = { .kind = IO_FAULT_WRITE, .off = off, .len = len };

	return change(f, op, buf);
}

static int fault_punch(struct io_file *f, uint64_t off, uint64_t len)
{
	struct io_fault_op op = { .kind = IO_FAULT_PUNCH, .off = off, .len = len };

	return change(f, op, NULL);
}

static int fault_fsync(struct io_file *f)
{
	struct io_fault_op op = { .kind = IO_FAULT_FLUSH };

	return change(f, op, NULL);
}

static int fault_truncate(struct io_file *f, uint64_t size)
{
	struct io_fault_op op = { .kind = IO_FAULT_TRUNCATE, .len = size };

	return change(f, op, NULL);
}

static int fault_preallocate(struct io_file *f, uint64_t off, uint64_t len)
{
	struct io_fault_op op = { .kind = IO_FAULT_PREALLOC, .off = off, .len = len };

	return change(f, op, NULL);
}

/* Detached, io_uring may take requests straight to the inner file again. */
static int fault_kernel_fd(struct io_file *f)
{
	return ((struct fault_file *)f)->fl ? -1 : io_file_kernel_fd(f->inner);
}

static void fault_close(struct io_file *f)
{
	io_fault_detach(((struct fault_file *)f)->fl);
	io_fwd_close(f);
}

/* Reads, sizes and the rest change nothing: they pass through. */
static const struct io_file_ops fault_ops = {
	.read = io_fwd_read,
	.write = fault_write,
	.punch = fault_punch,
	.fsync = fault_fsync,
	.truncate = fault_truncate,
	.preallocate = fault_preallocate,
	.size = io_fwd_size,
	.allocated = io_fwd_allocated,
	.seek = io_fwd_seek,
	.identity = io_fwd_identity,
	.kernel_fd = fault_kernel_fd,
	.close = fault_close,
};

int io_fault_wrap(struct io_file *inner, struct io_fault **out, struct io_file **outer)
{
	struct fault_file *ff;
	struct io_fault *fl;
	uint64_t size;
	int ret;

	*out = NULL;
	*outer = NULL;
	ret = io_file_size(inner, &size);
	if (ret < 0)
		return ret;
	fl = calloc(1, sizeof(*fl));
	ff = calloc(1, sizeof(*ff));
	if (!fl || !ff) {
		free(fl);
		free(ff);
		return -ENOMEM;
	}
	ret = image_set_len(&fl->base, size);
	if (ret == 0)
		ret = io_pread_full(inner, fl->base.data, (size_t)size, 0);
	if (ret < 0) {
		io_fault_image_free(&fl->base);
		free(fl);
		free(ff);
		return ret;
	}
	io_wrap_init(&ff->file, &fault_ops, inner);
	ff->fl = fl;
	fl->file = ff;
	*out = fl;
	*outer = &ff->file;
	return 0;
}

int io_fault_wrap_fn(struct io_file *inner, void *arg, struct io_file **outer)
{
	return io_fault_wrap(inner, arg, outer);
}
