// SPDX-License-Identifier: MIT
/* The fd file: a file or block device on disk behind the ops table, with
 * bounce buffers for misaligned O_DIRECT transfers. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "io.h"

/* Largest transfer per syscall: Linux stops at 0x7ffff000 bytes anyway, and
 * a power of two keeps O_DIRECT chunks aligned. */
#define MAX_XFER ((size_t)1 << 30)

/* Bounce buffers for misaligned O_DIRECT I/O are at most this big; larger
 * requests go through them in chunks. */
#define BOUNCE_MAX ((size_t)1 << 20)

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

struct fd_file {
	struct io_file file;
	int fd;
};

static const struct io_file_ops fd_ops;

static int fd_of(const struct io_file *f)
{
	return ((const struct fd_file *)f)->fd;
}

static bool misaligned(const struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	if (!(f->flags & IO_DIRECT) || f->align <= 1)
		return false;
	return (((uintptr_t)buf | off | len) & (f->align - 1)) != 0;
}

static bool pow2_in(unsigned a, unsigned lo, unsigned hi)
{
	return a >= lo && a <= hi && (a & (a - 1)) == 0;
}

/* Alignment O_DIRECT needs for buffers, offsets and lengths on this file. */
static unsigned direct_align(int fd, const struct stat *st)
{
	if (S_ISBLK(st->st_mode)) {
		int bs = 0;

		if (ioctl(fd, BLKSSZGET, &bs) == 0 && pow2_in((unsigned)bs, 512, 65536))
			return (unsigned)bs;
		return 4096;
	}
#ifdef STATX_DIOALIGN
	struct statx sx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
	    (sx.stx_mask & STATX_DIOALIGN)) {
		unsigned a = sx.stx_dio_offset_align > sx.stx_dio_mem_align ?
			     sx.stx_dio_offset_align : sx.stx_dio_mem_align;

		/* The kernel's own figure; 512 is the floor posix_memalign and
		 * the bounce chunking are written for. */
		if (pow2_in(a, 1, 65536))
			return a < 512 ? 512 : a;
	}
#endif
	return 4096;   /* safe for every device we know of */
}

int io_file_open(const char *path, unsigned flags, struct io_file **out)
{
	struct fd_file *ff;
	struct stat st;
	int oflags = O_CLOEXEC, fd, ret, why_none;
	bool lockable;

	*out = NULL;
	if (flags & IO_CREATE)
		flags |= IO_RDWR;   /* O_TRUNC on a read-only fd is undefined */
	if ((flags & IO_SHARE) && (flags & IO_RDWR))
		return uq_seterr(-EINVAL, "%s: force-share can only be used with "
				 "read-only images", path);
	oflags |= flags & IO_RDWR ? O_RDWR : O_RDONLY;
	/* No O_TRUNC: the file may be another process's image, and we only
	 * know once it is locked (below). */
	if (flags & IO_CREATE)
		oflags |= O_CREAT | (flags & IO_EXCL ? O_EXCL : 0);
	if (flags & IO_DIRECT)
		oflags |= O_DIRECT;
	do
		fd = open(path, oflags, 0644);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		ret = -errno;
		return uq_seterr(ret, "%s: %s", path, strerror(-ret));
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = -EISDIR;
		goto fail;
	}
	/* Before anything is read or written through it. Only files and
	 * block devices hold images: a character device (/dev/null as a
	 * convert target) is anyone's, and nobody's image. */
	lockable = S_ISREG(st.st_mode) || S_ISBLK(st.st_mode);
	why_none = 0;
	ret = lockable ? io_lock_open(fd, path, flags, &why_none) : 0;
	if (ret < 0) {
		close(fd);
		uq_errprefix(path);   /* lock.c said why */
		return ret;
	}
	if ((flags & IO_CREATE) && S_ISREG(st.st_mode) && st.st_size > 0)
		while ((ret = ftruncate(fd, 0)) < 0 && errno == EINTR)
			;
	if (ret < 0) {
		ret = -errno;
		goto fail;
	}
	ff = calloc(1, sizeof(*ff));
	if (!ff) {
		ret = -ENOMEM;
		goto fail;
	}
	io_file_init(&ff->file, &fd_ops, flags, flags & IO_DIRECT ? direct_align(fd, &st) : 1);
	ff->fd = fd;
	ff->file.locked = lockable && why_none == 0;
	ff->file.lock_err = why_none;
	*out = &ff->file;
	return 0;
fail:
	close(fd);
	return uq_seterr(ret, "%s: %s", path, strerror(-ret));
}

static void fd_close(struct io_file *f)
{
	/* now, not whenever a ring that registered the fd lets it go */
	if (f->locked)
		io_lock_release(fd_of(f));
	close(fd_of(f));
	free(f);
}

static int fd_size(struct io_file *f, uint64_t *size)
{
	struct stat st;

	if (fstat(fd_of(f), &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes;

		if (ioctl(fd_of(f), BLKGETSIZE64, &bytes) < 0)
			return -errno;
		*size = bytes;
		return 0;
	}
	*size = st.st_size < 0 ? 0 : (uint64_t)st.st_size;
	return 0;
}

static int fd_allocated(struct io_file *f, uint64_t *bytes)
{
	struct stat st;

	if (fstat(fd_of(f), &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode))
		return fd_size(f, bytes);   /* a device is all allocated */
	*bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}

static int fd_truncate(struct io_file *f, uint64_t size)
{
	while (ftruncate(fd_of(f), (off_t)size) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* pread until len bytes are in; what lies past end of file reads as zeros. */
static int read_loop(struct io_file *f, uint8_t *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		size_t n = min_sz(len - done, MAX_XFER);
		ssize_t r = pread(fd_of(f), buf + done, n, (off_t)(off + done));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;   /* end of file */
		done += (size_t)r;
		/* A short O_DIRECT read stops at end of file, which need not be
		 * aligned: a further read there would fail with EINVAL. */
		if ((size_t)r < n && misaligned(f, NULL, 0, off + done)) {
			uint64_t size;
			int ret = fd_size(f, &size);

			if (ret < 0)
				return ret;
			if (off + done < size)
				return -EIO;
			break;
		}
	}
	memset(buf + done, 0, len - done);
	return 0;
}

static int write_loop(struct io_file *f, const uint8_t *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		size_t n = min_sz(len - done, MAX_XFER);
		ssize_t r = pwrite(fd_of(f), buf + done, n, (off_t)(off + done));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (size_t)r;
		if ((size_t)r < n && misaligned(f, NULL, 0, off + done))
			return -EIO;   /* can't continue O_DIRECT mid-block */
	}
	return 0;
}

/* Bounce-buffer geometry for the chunk of a misaligned O_DIRECT transfer
 * that starts at pos: the buffer covers whole blocks around it. */
struct chunk {
	uint64_t start;   /* aligned file offset of the buffer */
	size_t head;      /* bytes before pos in the first block */
	size_t n;         /* caller bytes in this chunk */
	size_t blen;      /* aligned buffer length */
};

static void chunk_at(size_t a, size_t cap, uint64_t pos, size_t left, struct chunk *c)
{
	c->start = pos & ~(uint64_t)(a - 1);
	c->head = (size_t)(pos - c->start);
	c->n = min_sz(left, cap - c->head);
	c->blen = (c->head + c->n + a - 1) & ~(a - 1);
}

/* Size of the bounce buffer for len bytes at off: all of it, up to a cap. */
static size_t bounce_cap(size_t a, size_t len, uint64_t off)
{
	size_t head = (size_t)(off & (a - 1));

	if (len > BOUNCE_MAX - head)
		return BOUNCE_MAX;
	return (head + len + a - 1) & ~(a - 1);
}

static int bounce_read(struct io_file *f, uint8_t *buf, size_t len, uint64_t off)
{
	size_t a = f->align, cap = bounce_cap(a, len, off), done = 0;
	void *b;
	int ret = 0;

	if (posix_memalign(&b, a, cap))
		return -ENOMEM;
	while (done < len) {
		struct chunk c;

		chunk_at(a, cap, off + done, len - done, &c);
		ret = read_loop(f, b, c.blen, c.start);
		if (ret < 0)
			break;
		memcpy(buf + done, (uint8_t *)b + c.head, c.n);
		done += c.n;
	}
	free(b);
	return ret;
}

/* Read-modify-write of the partial blocks at either end. Not atomic against
 * other writers of the same blocks: callers never overlap in-flight I/O. */
static int bounce_write(struct io_file *f, const uint8_t *buf, size_t len, uint64_t off)
{
	size_t a = f->align, cap = bounce_cap(a, len, off), done = 0;
	uint64_t old_size = 0, end = off + len;
	bool tail = (end & (a - 1)) != 0;
	void *b;
	int ret = 0;

	/* A partial last block is written whole and may grow the file past
	 * end; remember the size to trim it back afterwards. */
	if (tail) {
		ret = fd_size(f, &old_size);
		if (ret < 0)
			return ret;
	}
	if (posix_memalign(&b, a, cap))
		return -ENOMEM;
	while (done < len) {
		struct chunk c;
		uint8_t *p = b;

		chunk_at(a, cap, off + done, len - done, &c);
		if (c.head)
			ret = read_loop(f, p, a, c.start);
		if (ret == 0 && ((c.head + c.n) & (a - 1)))
			ret = read_loop(f, p + c.blen - a, a, c.start + c.blen - a);
		if (ret < 0)
			break;
		memcpy(p + c.head, buf + done, c.n);
		ret = write_loop(f, p, c.blen, c.start);
		if (ret < 0)
			break;
		done += c.n;
	}
	free(b);
	if (ret == 0 && tail && old_size < ((end + a - 1) & ~(uint64_t)(a - 1))) {
		struct stat st;

		/* part of this write, not a truncate of its own */
		if (fstat(fd_of(f), &st) == 0 && S_ISREG(st.st_mode))
			ret = fd_truncate(f, old_size > end ? old_size : end);
	}
	return ret;
}

static int fd_read(struct io_file *f, void *buf, size_t len, uint64_t off)
{
	if (misaligned(f, buf, len, off))
		return bounce_read(f, buf, len, off);
	return read_loop(f, buf, len, off);
}

static int fd_write(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	if (misaligned(f, buf, len, off))
		return bounce_write(f, buf, len, off);
	return write_loop(f, buf, len, off);
}

static int fd_fsync(struct io_file *f)
{
	while (fdatasync(fd_of(f)) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Zeros over [off, off+len), clipped to the file size: a punch keeps it. */
static int write_zeros(struct io_file *f, uint64_t off, uint64_t len)
{
	size_t a = f->align > 1 ? f->align : 64, zlen;
	uint64_t size;
	void *z;
	int ret = fd_size(f, &size);

	if (ret < 0)
		return ret;
	if (off >= size)
		return 0;
	if (len > size - off)
		len = size - off;
	zlen = len < BOUNCE_MAX ? (size_t)(len + a - 1) & ~(a - 1) : BOUNCE_MAX;
	if (posix_memalign(&z, a, zlen))
		return -ENOMEM;
	memset(z, 0, zlen);
	while (len && ret == 0) {
		size_t n = len < zlen ? (size_t)len : zlen;

		ret = fd_write(f, z, n, off);   /* part of the punch, not a write of its own */
		off += n;
		len -= n;
	}
	free(z);
	return ret;
}

static int fd_punch(struct io_file *f, uint64_t off, uint64_t len)
{
	int ret;

	if (fallocate(fd_of(f), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		return 0;
	ret = -errno;
	/* No hole punching here (or not at this alignment, as on block
	 * devices): writing zeros reads back the same. */
	if (ret == -EOPNOTSUPP || ret == -ENOSYS || ret == -EINVAL)
		return write_zeros(f, off, len);
	return ret;
}

static int fd_preallocate(struct io_file *f, uint64_t off, uint64_t len)
{
	int ret;

	/* posix_fallocate returns the error; glibc writes zeros where the
	 * file system can't allocate */
	do
		ret = posix_fallocate(fd_of(f), (off_t)off, (off_t)len);
	while (ret == EINTR);
	return -ret;
}

static int fd_seek(struct io_file *f, uint64_t off, bool hole, uint64_t *pos)
{
	off_t r = lseek(fd_of(f), (off_t)off, hole ? SEEK_HOLE : SEEK_DATA);

	if (r < 0)
		return -errno;
	*pos = (uint64_t)r;
	return 0;
}

static int fd_identity(struct io_file *f, uint64_t *dev, uint64_t *ino)
{
	struct stat st;

	if (fstat(fd_of(f), &st) < 0)
		return -errno;
	*dev = st.st_dev;
	*ino = st.st_ino;
	return 0;
}

static int fd_kernel_fd(struct io_file *f)
{
	return fd_of(f);
}

static const struct io_file_ops fd_ops = {
	.read = fd_read,
	.write = fd_write,
	.punch = fd_punch,
	.fsync = fd_fsync,
	.truncate = fd_truncate,
	.preallocate = fd_preallocate,
	.size = fd_size,
	.allocated = fd_allocated,
	.seek = fd_seek,
	.identity = fd_identity,
	.kernel_fd = fd_kernel_fd,
	.close = fd_close,
};
