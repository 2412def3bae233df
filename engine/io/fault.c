// SPDX-License-Identifier: MIT
/* The fault-injection layer (SQLite's crash-simulation VFS is the model):
 * records each change to a file, fails changes on demand, replays crashes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"

struct io_fault {
	struct io_file *f;
	struct io_fault_image base;   /* the file at attach */
	struct io_fault_op *ops;
	size_t nops, cap;
	uint64_t changes;             /* issued since attach, failed ones too */
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

/* ---- recording ---- */

int io_fault_attach(struct io_file *f, struct io_fault **out)
{
	struct io_fault *fl;
	uint64_t size;
	int ret;

	*out = NULL;
	if (f->hook)
		return -EBUSY;
	ret = io_file_size(f, &size);
	if (ret < 0)
		return ret;
	fl = calloc(1, sizeof(*fl));
	if (!fl)
		return -ENOMEM;
	ret = image_set_len(&fl->base, size);
	if (ret == 0)
		ret = io_pread_full(f, fl->base.data, (size_t)size, 0);
	if (ret < 0) {
		io_fault_image_free(&fl->base);
		free(fl);
		return ret;
	}
	fl->f = f;
	f->hook = fl;
	*out = fl;
	return 0;
}

void io_fault_detach(struct io_fault *fl)
{
	if (fl && fl->f && fl->f->hook == fl)
		fl->f->hook = NULL;
	if (fl)
		fl->f = NULL;
}

void io_fault_free(struct io_fault *fl)
{
	if (!fl)
		return;
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
		op->data = malloc((size_t)op->len);
		if (!op->data)
			return -ENOMEM;
		memcpy(op->data, buf, (size_t)op->len);
	}
	return 0;
}

/* Run a change through the plain path and record it if it landed: r, or
 * for a truncate (which has no request) op.len applied to f. */
static ssize_t run(struct io_fault *fl, struct io_fault_op op, struct io_req *r,
		   struct io_file *f)
{
	ssize_t res;
	int ret;

	if (must_fail(fl, &op))
		return fl->err;
	ret = prepare(fl, &op, r ? r->buf : NULL);
	if (ret < 0)
		return ret;
	res = r ? io_exec_plain(r) : io_truncate_plain(f, op.len);
	if (res < 0) {
		free(op.data);
		return res;
	}
	/* A write or punch that did nothing needn't be replayed. */
	if (op.kind != IO_FAULT_WRITE && op.kind != IO_FAULT_PUNCH)
		fl->ops[fl->nops++] = op;
	else if (op.len)
		fl->ops[fl->nops++] = op;
	return res;
}

ssize_t io_fault_exec(struct io_req *r)
{
	struct io_fault *fl = r->file->hook;
	struct io_fault_op op = { .off = r->off, .len = r->len };

	switch (r->op) {
	case IO_READ:
		return io_exec_plain(r);
	case IO_WRITE:
		op.kind = IO_FAULT_WRITE;
		break;
	case IO_PUNCH:
		op.kind = IO_FAULT_PUNCH;
		break;
	case IO_FSYNC:
		op.kind = IO_FAULT_FLUSH;
		op.off = op.len = 0;
		break;
	default:
		return -EINVAL;
	}
	return run(fl, op, r, r->file);
}

int io_fault_pwrite(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	struct io_req r = { .op = IO_WRITE, .file = f, .buf = (void *)buf, .len = len,
			    .off = off };
	ssize_t res = io_fault_exec(&r);

	return res < 0 ? (int)res : 0;
}

int io_fault_fsync(struct io_file *f)
{
	struct io_req r = { .op = IO_FSYNC, .file = f };
	ssize_t res = io_fault_exec(&r);

	return res < 0 ? (int)res : 0;
}

int io_fault_truncate(struct io_file *f, uint64_t size)
{
	struct io_fault_op op = { .kind = IO_FAULT_TRUNCATE, .len = size };

	return (int)run(f->hook, op, NULL, f);
}
