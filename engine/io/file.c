// SPDX-License-Identifier: MIT
/* Files on disk: open, size, truncate, synchronous full reads and writes
 * (O_DIRECT bounce buffers), inline request execution, queue selection. */
#include <errno.h>
#include <stdatomic.h>
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
#include "fault.h"
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

/* Offsets must fit off_t, and off + len must not wrap. */
static int check_range(uint64_t off, size_t len)
{
	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	return 0;
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
	struct io_file *f;
	struct stat st;
	int oflags = O_CLOEXEC, fd, ret;

	*out = NULL;
	if (flags & IO_CREATE)
		flags |= IO_RDWR;   /* O_TRUNC on a read-only fd is undefined */
	oflags |= flags & IO_RDWR ? O_RDWR : O_RDONLY;
	if (flags & IO_CREATE)
		oflags |= O_CREAT | O_TRUNC | (flags & IO_EXCL ? O_EXCL : 0);
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
	f = calloc(1, sizeof(*f));
	if (!f) {
		ret = -ENOMEM;
		goto fail;
	}
	f->fd = fd;
	{
		static _Atomic uint64_t next_id = 1;

		f->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
	}
	f->flags = flags;
	f->align = flags & IO_DIRECT ? direct_align(fd, &st) : 1;
	*out = f;
	return 0;
fail:
	close(fd);
	return uq_seterr(ret, "%s: %s", path, strerror(-ret));
}

void io_file_close(struct io_file *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	free(f->mem);
	free(f);
}

int io_file_size(struct io_file *f, uint64_t *size)
{
	struct stat st;

	if (f->fd < 0) {
		*size = f->mem_len;
		return 0;
	}
	if (fstat(f->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes;

		if (ioctl(f->fd, BLKGETSIZE64, &bytes) < 0)
			return -errno;
		*size = bytes;
		return 0;
	}
	*size = st.st_size < 0 ? 0 : (uint64_t)st.st_size;
	return 0;
}

int io_file_allocated(struct io_file *f, uint64_t *bytes)
{
	struct stat st;

	if (f->fd < 0) {
		*bytes = f->mem_len;
		return 0;
	}
	if (fstat(f->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode))
		return io_file_size(f, bytes);   /* a device is all allocated */
	*bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}

int io_truncate_plain(struct io_file *f, uint64_t size)
{
	if (f->fd < 0)
		return io_mem_truncate(f, size);
	if (size > INT64_MAX)
		return -EFBIG;
	while (ftruncate(f->fd, (off_t)size) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

int io_file_truncate(struct io_file *f, uint64_t size)
{
	/* a file under fault injection: it records (or fails) the change */
	if (f->hook)
		return io_fault_truncate(f, size);
	return io_truncate_plain(f, size);
}

int io_file_preallocate(struct io_file *f, uint64_t off, uint64_t len)
{
	uint64_t size;
	int ret = check_range(off, len);

	if (ret < 0)
		return ret;
	if (len == 0)
		return -EINVAL;   /* as posix_fallocate says */
	if (f->fd < 0) {
		/* memory is allocated as it is written: only the size grows */
		ret = io_file_size(f, &size);
		return ret == 0 && off + len > size ? io_mem_truncate(f, off + len) : ret;
	}
	do
		ret = posix_fallocate(f->fd, (off_t)off, (off_t)len);
	while (ret == EINTR);
	return -ret;
}

static int seek(struct io_file *f, uint64_t off, bool hole, uint64_t *pos)
{
	off_t r;

	if (off > INT64_MAX)
		return -ENXIO;
	if (f->fd < 0) {
		/* no holes: all of it is data */
		if (off >= f->mem_len)
			return -ENXIO;
		*pos = hole ? f->mem_len : off;
		return 0;
	}
	r = lseek(f->fd, (off_t)off, hole ? SEEK_HOLE : SEEK_DATA);
	if (r < 0)
		return -errno;
	*pos = (uint64_t)r;
	return 0;
}

int io_file_seek_data(struct io_file *f, uint64_t off, uint64_t *pos)
{
	return seek(f, off, false, pos);
}

int io_file_seek_hole(struct io_file *f, uint64_t off, uint64_t *pos)
{
	return seek(f, off, true, pos);
}

int io_file_identity(struct io_file *f, uint64_t *dev, uint64_t *ino)
{
	struct stat st;

	if (f->fd < 0)
		return -ENOTSUP;
	if (fstat(f->fd, &st) < 0)
		return -errno;
	*dev = st.st_dev;
	*ino = st.st_ino;
	return 0;
}

/* pread until len bytes are in; what lies past end of file reads as zeros. */
static int read_loop(struct io_file *f, uint8_t *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		size_t n = min_sz(len - done, MAX_XFER);
		ssize_t r = pread(f->fd, buf + done, n, (off_t)(off + done));

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
			int ret = io_file_size(f, &size);

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
		ssize_t r = pwrite(f->fd, buf + done, n, (off_t)(off + done));

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
		ret = io_file_size(f, &old_size);
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

		if (fstat(f->fd, &st) == 0 && S_ISREG(st.st_mode))
			ret = io_file_truncate(f, old_size > end ? old_size : end);
	}
	return ret;
}

int io_pread_full(struct io_file *f, void *buf, size_t len, uint64_t off)
{
	int ret = check_range(off, len);

	if (ret < 0 || len == 0)
		return ret;
	if (f->fd < 0) {
		struct io_req r = { .op = IO_READ, .file = f, .buf = buf, .len = len, .off = off };
		ssize_t res = io_mem_exec(&r);

		return res < 0 ? (int)res : 0;
	}
	if (misaligned(f, buf, len, off))
		return bounce_read(f, buf, len, off);
	return read_loop(f, buf, len, off);
}

static int pwrite_plain(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	int ret = check_range(off, len);

	if (ret < 0 || len == 0)
		return ret;
	if (f->fd < 0) {
		struct io_req r = { .op = IO_WRITE, .file = f, .buf = (void *)buf,
				    .len = len, .off = off };
		ssize_t res = io_mem_exec(&r);

		return res < 0 ? (int)res : 0;
	}
	if (misaligned(f, buf, len, off))
		return bounce_write(f, buf, len, off);
	return write_loop(f, buf, len, off);
}

int io_pwrite_full(struct io_file *f, const void *buf, size_t len, uint64_t off)
{
	if (f->hook)
		return io_fault_pwrite(f, buf, len, off);
	return pwrite_plain(f, buf, len, off);
}

static int fsync_plain(struct io_file *f)
{
	if (f->fd < 0)
		return 0;
	while (fdatasync(f->fd) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

int io_fsync(struct io_file *f)
{
	if (f->hook)
		return io_fault_fsync(f);
	return fsync_plain(f);
}

/* Zeros over [off, off+len), clipped to the file size: a punch keeps it. */
static int write_zeros(struct io_file *f, uint64_t off, size_t len)
{
	size_t a = f->align > 1 ? f->align : 64, zlen;
	uint64_t size;
	void *z;
	int ret = io_file_size(f, &size);

	if (ret < 0)
		return ret;
	if (off >= size)
		return 0;
	if (len > size - off)
		len = (size_t)(size - off);
	zlen = len < BOUNCE_MAX ? (len + a - 1) & ~(a - 1) : BOUNCE_MAX;
	if (posix_memalign(&z, a, zlen))
		return -ENOMEM;
	memset(z, 0, zlen);
	while (len && ret == 0) {
		size_t n = min_sz(len, zlen);

		ret = pwrite_plain(f, z, n, off);   /* part of the punch, not a write of its own */
		off += n;
		len -= n;
	}
	free(z);
	return ret;
}

static int punch(struct io_file *f, uint64_t off, size_t len)
{
	int ret = check_range(off, len);

	if (ret < 0 || len == 0)
		return ret;
	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		return 0;
	ret = -errno;
	/* No hole punching here (or not at this alignment, as on block
	 * devices): writing zeros reads back the same. */
	if (ret == -EOPNOTSUPP || ret == -ENOSYS || ret == -EINVAL)
		return write_zeros(f, off, len);
	return ret;
}

ssize_t io_exec_plain(struct io_req *r)
{
	struct io_file *f = r->file;
	int ret;

	if (f->fd < 0)
		return io_mem_exec(r);
	switch (r->op) {
	case IO_READ:
		ret = io_pread_full(f, r->buf, r->len, r->off);
		return ret < 0 ? ret : (ssize_t)r->len;
	case IO_WRITE:
		ret = pwrite_plain(f, r->buf, r->len, r->off);
		return ret < 0 ? ret : (ssize_t)r->len;
	case IO_FSYNC:
		return fsync_plain(f);
	case IO_PUNCH:
		return punch(f, r->off, r->len);
	}
	return -EINVAL;
}

ssize_t io_exec_sync(struct io_req *r)
{
	/* the fault layer sees every request first, then runs it as plain */
	if (r->file->hook)
		return io_fault_exec(r);
	return io_exec_plain(r);
}

static bool fallback_ok(int err)
{
	return err == -ENOSYS || err == -EPERM || err == -ENOMEM || err == -EACCES ||
	       err == -EOPNOTSUPP;
}

int io_queue_create(const char *force, unsigned depth, struct io_queue **q)
{
	int ret;

	*q = NULL;
	if (!force) {
		/* Lets tests and users pick a backend without a rebuild. */
		const char *env = getenv("UQCOW_IO");

		if (env && *env && strcmp(env, "auto") != 0)
			force = env;
	}
	if (!force) {
		ret = io_uring_backend.queue_init(q, depth);
		if (ret < 0 && fallback_ok(ret))
			ret = io_psync_backend.queue_init(q, depth);
		return ret;
	}
	if (strcmp(force, io_uring_backend.name) == 0)
		return io_uring_backend.queue_init(q, depth);
	if (strcmp(force, io_psync_backend.name) == 0)
		return io_psync_backend.queue_init(q, depth);
	return -EINVAL;
}
