// SPDX-License-Identifier: MIT
/* The dispatchers: argument checks in one place, then the file's ops. Also
 * inline execution of a queued request, and file ids. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#include "io.h"

/* Offsets must fit off_t, and off + len must not wrap. */
static int check_range(uint64_t off, uint64_t len)
{
	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	return 0;
}

void io_file_init(struct io_file *f, const struct io_file_ops *ops, unsigned flags,
		  unsigned align)
{
	static _Atomic uint64_t next_id = 1;

	f->ops = ops;
	f->inner = NULL;
	f->flags = flags;
	f->align = align;
	f->locked = false;
	f->lock_err = 0;
	f->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
}

void io_file_close(struct io_file *f)
{
	if (f)
		f->ops->close(f);
}

int io_pread_full(struct io_file *f, void *buf, size_t len, uint64_t off)
{
	int ret = check_range(off, len);

	if (ret < 0 || len == 0)
		return ret;
	return f->ops->read(f, buf, len, off);
}

int io_pwrite_full(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	int ret = check_range(off, len);

	if (ret < 0 || len == 0)
		return ret;
	return f->ops->write(f, buf, len, off);
}

int io_punch(struct io_file *f, uint64_t off, uint64_t len)
{
	int ret = check_range(off, len);

	if (ret < 0 || len == 0)
		return ret;
	return f->ops->punch(f, off, len);
}

int io_fsync(struct io_file *f)
{
	return f->ops->fsync(f);
}

int io_file_truncate(struct io_file *f, uint64_t size)
{
	if (size > INT64_MAX)
		return -EFBIG;
	return f->ops->truncate(f, size);
}

int io_file_preallocate(struct io_file *f, uint64_t off, uint64_t len)
{
	int ret = check_range(off, len);

	if (ret < 0)
		return ret;
	if (len == 0)
		return -EINVAL;   /* as posix_fallocate says */
	return f->ops->preallocate(f, off, len);
}

int io_file_size(struct io_file *f, uint64_t *size)
{
	return f->ops->size(f, size);
}

int io_file_allocated(struct io_file *f, uint64_t *bytes)
{
	return f->ops->allocated(f, bytes);
}

int io_file_seek_data(struct io_file *f, uint64_t off, uint64_t *pos)
{
	if (off > INT64_MAX)
		return -ENXIO;
	return f->ops->seek(f, off, false, pos);
}

int io_file_seek_hole(struct io_file *f, uint64_t off, uint64_t *pos)
{
	if (off > INT64_MAX)
		return -ENXIO;
	return f->ops->seek(f, off, true, pos);
}

int io_file_identity(struct io_file *f, uint64_t *dev, uint64_t *ino)
{
	return f->ops->identity(f, dev, ino);
}

int io_file_kernel_fd(struct io_file *f)
{
	return f->ops->kernel_fd(f);
}

ssize_t io_exec_sync(struct io_req *r)
{
	struct io_file *f = r->file;
	int ret;

	switch (r->op) {
	case IO_READ:
		ret = io_pread_full(f, r->buf, r->len, r->off);
		return ret < 0 ? ret : (ssize_t)r->len;
	case IO_WRITE:
		ret = io_pwrite_full(f, r->buf, r->len, r->off);
		return ret < 0 ? ret : (ssize_t)r->len;
	case IO_FSYNC:
		return io_fsync(f);
	case IO_PUNCH:
		return io_punch(f, r->off, r->len);
	}
	return -EINVAL;
}
