// SPDX-License-Identifier: MIT
/* Image locks QEMU understands: OFD byte-range locks at the offsets and
 * with the meaning of QEMU's file-posix driver, taken when a file opens. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "error.h"
#include "io.h"

/* QEMU holds byte PERM_BASE + i while it has permission bit i, and byte
 * SHARED_BASE + i while it refuses to share bit i with anyone else.
 * (Libvirt owns byte 0; the bases leave it room.) Every lock is a read
 * lock: a byte tells who has it, the holders never exclude each other. */
#define PERM_BASE   100
#define SHARED_BASE 200

/* Bit i's name, as QEMU names it in its messages. */
static const char *const perm_names[] = {
	"consistent read", "write", "write unchanged", "resize",
};

_Static_assert(sizeof(perm_names) / sizeof(perm_names[0]) == 4,
	       "one name per IO_PERM_* bit");

/* The permissions an open holds, and those it shares, as QEMU's qcow2
 * opens take them on their file (read from /proc/locks and strace of
 * qemu-io and qemu-img 7.2). */
static void perms_for(unsigned flags, unsigned *perm, unsigned *shared)
{
	if (flags & IO_CREATE) {
		/* qemu-img create, before it truncates: it will write and
		 * resize; only a resize by someone else is refused */
		*perm = IO_PERM_WRITE | IO_PERM_RESIZE;
		*shared = IO_PERM_ALL & ~IO_PERM_RESIZE;
	} else if (flags & IO_RDWR) {
		/* qemu-io, qemu-img check -r / snapshot -c / resize / amend */
		*perm = IO_PERM_CONSISTENT_READ | IO_PERM_WRITE | IO_PERM_RESIZE;
		*shared = IO_PERM_CONSISTENT_READ | IO_PERM_WRITE_UNCHANGED;
	} else if (flags & IO_SHARE) {
		/* -U / force-share: reads, and lets anyone do anything */
		*perm = IO_PERM_CONSISTENT_READ;
		*shared = IO_PERM_ALL;
	} else {
		/* read-only opens and backing files: nobody may write or
		 * resize the image under the reader */
		*perm = IO_PERM_CONSISTENT_READ;
		*shared = IO_PERM_CONSISTENT_READ | IO_PERM_WRITE_UNCHANGED;
	}
}

static int ofd(int fd, int cmd, short type, int byte)
{
	/* OFD commands need l_pid 0; the rest of the struct is zeroed too */
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = byte,
			    .l_len = 1 };

	while (fcntl(fd, cmd, &fl) < 0)
		if (errno != EINTR)
			return -errno;
	if (cmd == F_OFD_GETLK)
		return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
	return 0;
}

/* Errors that mean "no OFD locks here", not "someone holds the lock":
 * kernels before 3.15 reject the command (EINVAL), and some file systems
 * (network ones without a lock manager, some FUSE ones) can't lock. */
static bool unavailable(int err)
{
	return err == -EINVAL || err == -ENOSYS || err == -EOPNOTSUPP || err == -ENOLCK;
}

static int conflict(const char *path, const char *what, unsigned bit, const char *why)
{
	const char *name = perm_names[__builtin_ctz(bit)];

	return uq_seterr(-EAGAIN, "Failed to get %s\"%s\" lock: another process has "
			 "the image open %s \"%s\". Is another process using the "
			 "image [%s]?", what, name, why, name, path);
}

void io_lock_release(int fd)
{
	/* one call for every byte of both ranges */
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET,
			    .l_start = PERM_BASE,
			    .l_len = SHARED_BASE + 4 - PERM_BASE };

	(void)fcntl(fd, F_OFD_SETLK, &fl);
}

/* Read-lock the byte of each permission in perm and of each one missing
 * from shared. */
static int take(int fd, const char *path, unsigned perm, unsigned shared)
{
	for (unsigned i = 0; i < 4; i++) {
		int bytes[2] = { perm & (1u << i) ? PERM_BASE + (int)i : -1,
				 shared & (1u << i) ? -1 : SHARED_BASE + (int)i };

		for (int k = 0; k < 2; k++) {
			int ret = bytes[k] < 0 ? 0 : ofd(fd, F_OFD_SETLK, F_RDLCK, bytes[k]);

			if (ret == -EAGAIN || ret == -EACCES)
				/* a write lock there: not QEMU's, but whoever
				 * holds it means to keep others out */
				return uq_seterr(-EAGAIN, "Failed to lock byte %d: another "
						 "process holds a lock on it. Is another "
						 "process using the image [%s]?", bytes[k], path);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* Nobody else may refuse to share what we take, nor hold what we refuse
 * to share. */
static int test(int fd, const char *path, unsigned perm, unsigned shared)
{
	int ret;

	for (unsigned i = 0; i < 4; i++) {
		if (!(perm & (1u << i)))
			continue;
		ret = ofd(fd, F_OFD_GETLK, F_WRLCK, SHARED_BASE + (int)i);
		if (ret == -EAGAIN)
			return conflict(path, "", 1u << i, "and doesn't share");
		if (ret < 0)
			return ret;
	}
	for (unsigned i = 0; i < 4; i++) {
		if (shared & (1u << i))
			continue;
		ret = ofd(fd, F_OFD_GETLK, F_WRLCK, PERM_BASE + (int)i);
		if (ret == -EAGAIN)
			return conflict(path, "shared ", 1u << i, "with");
		if (ret < 0)
			return ret;
	}
	return 0;
}

int io_lock_take(int fd, const char *path, unsigned perm, unsigned shared,
		 int *why_none)
{
	int ret;

	*why_none = 0;
	/* Lock first, then test, as QEMU does: of two openers racing, the
	 * later one to test sees the other's bytes, so both can't miss. */
	ret = take(fd, path, perm, shared);
	if (ret == 0)
		ret = test(fd, path, perm, shared);
	if (ret == 0)
		return 0;
	io_lock_release(fd);
	if (unavailable(ret)) {
		*why_none = -ret;
		return 0;
	}
	if (ret != -EAGAIN)
		uq_seterr(ret, "image locks: %s", strerror(-ret));
	return ret;
}

int io_lock_open(int fd, const char *path, unsigned flags, int *why_none)
{
	unsigned perm, shared;

	perms_for(flags, &perm, &shared);
	return io_lock_take(fd, path, perm, shared, why_none);
}
