// SPDX-License-Identifier: MIT
/* What wrappers share: setting one up over its inner file, and ops that
 * pass a call through unchanged, for the entries a wrapper doesn't change. */
#include <stdlib.h>

#include "io.h"

void io_wrap_init(struct io_file *outer, const struct io_file_ops *ops,
		  struct io_file *inner)
{
	/* a fresh id: io_uring must not take the wrapper for its inner file */
	io_file_init(outer, ops, inner->flags, inner->align);
	outer->inner = inner;
	/* the locks are the inner file's, held as long as it is open */
	outer->locked = inner->locked;
	outer->lock_err = inner->lock_err;
}

int io_fwd_read(struct io_file *f, void *buf, size_t len, uint64_t off)
{
	return io_pread_full(f->inner, buf, len, off);
}

int io_fwd_write(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	return io_pwrite_full(f->inner, buf, len, off);
}

int io_fwd_punch(struct io_file *f, uint64_t off, uint64_t len)
{
	return io_punch(f->inner, off, len);
}

int io_fwd_fsync(struct io_file *f)
{
	return io_fsync(f->inner);
}

int io_fwd_truncate(struct io_file *f, uint64_t size)
{
	return io_file_truncate(f->inner, size);
}

int io_fwd_preallocate(struct io_file *f, uint64_t off, uint64_t len)
{
	return io_file_preallocate(f->inner, off, len);
}

int io_fwd_size(struct io_file *f, uint64_t *size)
{
	return io_file_size(f->inner, size);
}

int io_fwd_allocated(struct io_file *f, uint64_t *bytes)
{
	return io_file_allocated(f->inner, bytes);
}

int io_fwd_seek(struct io_file *f, uint64_t off, bool hole, uint64_t *pos)
{
	return hole ? io_file_seek_hole(f->inner, off, pos) :
		      io_file_seek_data(f->inner, off, pos);
}

int io_fwd_identity(struct io_file *f, uint64_t *dev, uint64_t *ino)
{
	return io_file_identity(f->inner, dev, ino);
}

int io_fwd_kernel_fd(struct io_file *f)
{
	return io_file_kernel_fd(f->inner);
}

int io_no_kernel_fd(struct io_file *f)
{
	(void)f;
	return -1;
}

void io_fwd_close(struct io_file *f)
{
	io_file_close(f->inner);
	free(f);
}
