// SPDX-License-Identifier: MIT
/* The memory file: a growable byte array behind the ops table, standing in
 * for a disk file in tests and fuzzing. It has no kernel fd, so requests
 * on it run inline under every backend. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

struct mem_file {
	struct io_file file;
	uint8_t *mem;
	uint64_t len;
	size_t cap;
	uint64_t limit;   /* growing past this fails with ENOSPC (0 = none) */
};

static const struct io_file_ops mem_ops;

static struct mem_file *to_mf(struct io_file *f)
{
	return (struct mem_file *)f;
}

int io_file_open_mem(const void *data, size_t len, unsigned flags, struct io_file **out)
{
	struct mem_file *mf;

	*out = NULL;
	mf = calloc(1, sizeof(*mf));
	if (!mf)
		return -ENOMEM;
	if (len) {
		mf->mem = malloc(len);
		if (!mf->mem) {
			free(mf);
			return -ENOMEM;
		}
		memcpy(mf->mem, data, len);
	}
	io_file_init(&mf->file, &mem_ops, flags & IO_CREATE ? flags | IO_RDWR : flags, 1);
	mf->len = len;
	mf->cap = len;
	*out = &mf->file;
	return 0;
}

int io_mem_set_limit(struct io_file *f, uint64_t bytes)
{
	if (f->ops != &mem_ops)
		return -EINVAL;
	to_mf(f)->limit = bytes;
	return 0;
}

static void mem_close(struct io_file *f)
{
	free(to_mf(f)->mem);
	free(f);
}

/* Make room for size bytes. Capacity at least doubles so that a file
 * written front to back costs amortised O(1) per byte. */
static int reserve(struct mem_file *mf, uint64_t size)
{
	size_t cap;
	uint8_t *p;

	if (size > SIZE_MAX / 2)
		return -ENOMEM;
	if (size <= mf->cap)
		return 0;
	cap = mf->cap < 4096 ? 4096 : mf->cap;
	while (cap < size)
		cap *= 2;
	p = realloc(mf->mem, cap);
	if (!p)
		return -ENOMEM;
	mf->mem = p;
	mf->cap = cap;
	return 0;
}

/* Set the length; growth reads as zeros. */
static int set_len(struct mem_file *mf, uint64_t size)
{
	int ret;

	if (size > mf->len) {
		if (mf->limit && size > mf->limit)
			return -ENOSPC;
		ret = reserve(mf, size);
		if (ret < 0)
			return ret;
		memset(mf->mem + mf->len, 0, (size_t)(size - mf->len));
	}
	mf->len = size;
	return 0;
}

static int mem_truncate(struct io_file *f, uint64_t size)
{
	struct mem_file *mf = to_mf(f);

	if (!(f->flags & IO_RDWR))
		return -EINVAL;   /* what ftruncate says on a read-only fd */
	int ret = set_len(mf, size);

	/* Give memory back after a large shrink. */
	if (ret == 0 && mf->cap > 65536 && size < mf->cap / 4) {
		uint8_t *p = realloc(mf->mem, size ? (size_t)size : 1);

		if (p) {
			mf->mem = p;
			mf->cap = size ? (size_t)size : 1;
		}
	}
	return ret;
}

static int mem_read(struct io_file *f, void *buf, size_t len, uint64_t off)
{
	struct mem_file *mf = to_mf(f);
	size_t n = off >= mf->len ? 0 : (size_t)(mf->len - off < len ? mf->len - off : len);

	if (n)
		memcpy(buf, mf->mem + off, n);
	memset((uint8_t *)buf + n, 0, len - n);
	return 0;
}

static int mem_write(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	struct mem_file *mf = to_mf(f);
	uint64_t end = off + len;
	int ret;

	if (!(f->flags & IO_RDWR))
		return -EBADF;
	if (mf->limit && end > mf->limit)
		return -ENOSPC;
	if (end > mf->len) {
		ret = set_len(mf, end);
		if (ret < 0)
			return ret;
	}
	memcpy(mf->mem + off, buf, len);
	return 0;
}

static int mem_punch(struct io_file *f, uint64_t off, uint64_t len)
{
	struct mem_file *mf = to_mf(f);
	uint64_t end = off + len;

	if (!(f->flags & IO_RDWR))
		return -EBADF;
	if (off < mf->len)
		memset(mf->mem + off, 0, (size_t)((end < mf->len ? end : mf->len) - off));
	return 0;
}

static int mem_fsync(struct io_file *f)
{
	(void)f;
	return 0;
}

/* Memory is allocated as it is written: only the size can grow. */
static int mem_preallocate(struct io_file *f, uint64_t off, uint64_t len)
{
	struct mem_file *mf = to_mf(f);

	if (!(f->flags & IO_RDWR))
		return -EBADF;
	return off + len > mf->len ? set_len(mf, off + len) : 0;
}

static int mem_size(struct io_file *f, uint64_t *size)
{
	*size = to_mf(f)->len;
	return 0;
}

/* No holes: all of it is data. */
static int mem_seek(struct io_file *f, uint64_t off, bool hole, uint64_t *pos)
{
	uint64_t len = to_mf(f)->len;

	if (off >= len)
		return -ENXIO;
	*pos = hole ? len : off;
	return 0;
}

static int mem_identity(struct io_file *f, uint64_t *dev, uint64_t *ino)
{
	(void)f;
	(void)dev;
	(void)ino;
	return -ENOTSUP;
}

static const struct io_file_ops mem_ops = {
	.read = mem_read,
	.write = mem_write,
	.punch = mem_punch,
	.fsync = mem_fsync,
	.truncate = mem_truncate,
	.preallocate = mem_preallocate,
	.size = mem_size,
	.allocated = mem_size,   /* every byte is in memory */
	.seek = mem_seek,
	.identity = mem_identity,
	.kernel_fd = io_no_kernel_fd,
	.close = mem_close,
};
