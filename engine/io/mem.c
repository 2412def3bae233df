// SPDX-License-Identifier: MIT
/* In-memory files: a growable byte array that stands in for a disk file in
 * tests and fuzzing. Requests on them run inline under every backend. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

int io_file_open_mem(const void *data, size_t len, unsigned flags, struct io_file **out)
{
	struct io_file *f;

	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	if (len) {
		f->mem = malloc(len);
		if (!f->mem) {
			free(f);
			return -ENOMEM;
		}
		memcpy(f->mem, data, len);
	}
	f->fd = -1;
	f->flags = flags & IO_CREATE ? flags | IO_RDWR : flags;
	f->mem_len = len;
	f->mem_cap = len;
	f->align = 1;
	*out = f;
	return 0;
}

/* Make room for size bytes. Capacity at least doubles so that a file
 * written front to back costs amortised O(1) per byte. */
static int reserve(struct io_file *f, uint64_t size)
{
	size_t cap;
	uint8_t *p;

	if (size > SIZE_MAX / 2)
		return -ENOMEM;
	if (size <= f->mem_cap)
		return 0;
	cap = f->mem_cap < 4096 ? 4096 : f->mem_cap;
	while (cap < size)
		cap *= 2;
	p = realloc(f->mem, cap);
	if (!p)
		return -ENOMEM;
	f->mem = p;
	f->mem_cap = cap;
	return 0;
}

/* Set the length; growth reads as zeros. */
static int set_len(struct io_file *f, uint64_t size)
{
	int ret;

	if (size > f->mem_len) {
		if (f->mem_limit && size > f->mem_limit)
			return -ENOSPC;
		ret = reserve(f, size);
		if (ret < 0)
			return ret;
		memset(f->mem + f->mem_len, 0, (size_t)(size - f->mem_len));
	}
	f->mem_len = size;
	return 0;
}

int io_mem_truncate(struct io_file *f, uint64_t size)
{
	if (!(f->flags & IO_RDWR))
		return -EINVAL;   /* what ftruncate says on a read-only fd */
	if (size > INT64_MAX)
		return -EFBIG;
	int ret = set_len(f, size);

	/* Give memory back after a large shrink. */
	if (ret == 0 && f->mem_cap > 65536 && size < f->mem_cap / 4) {
		uint8_t *p = realloc(f->mem, size ? (size_t)size : 1);

		if (p) {
			f->mem = p;
			f->mem_cap = size ? (size_t)size : 1;
		}
	}
	return ret;
}

ssize_t io_mem_exec(struct io_req *r)
{
	struct io_file *f = r->file;
	uint64_t off = r->off, end;
	size_t n;
	int ret;

	if (r->op == IO_FSYNC)
		return 0;
	if (off > INT64_MAX || r->len > INT64_MAX - off)
		return -EINVAL;
	end = off + r->len;
	switch (r->op) {
	case IO_READ:
		n = off >= f->mem_len ? 0 : (size_t)(f->mem_len - off < r->len ?
						      f->mem_len - off : r->len);
		if (n)
			memcpy(r->buf, f->mem + off, n);
		memset((uint8_t *)r->buf + n, 0, r->len - n);
		return (ssize_t)r->len;
	case IO_WRITE:
		if (!(f->flags & IO_RDWR))
			return -EBADF;
		if (r->len == 0)
			return 0;
		if (f->mem_limit && end > f->mem_limit)
			return -ENOSPC;
		if (end > f->mem_len) {
			ret = set_len(f, end);
			if (ret < 0)
				return ret;
		}
		memcpy(f->mem + off, r->buf, r->len);
		return (ssize_t)r->len;
	case IO_PUNCH:
		if (!(f->flags & IO_RDWR))
			return -EBADF;
		if (off < f->mem_len)
			memset(f->mem + off, 0, (size_t)((end < f->mem_len ? end : f->mem_len) - off));
		return 0;
	case IO_FSYNC:
		break;
	}
	return -EINVAL;
}
