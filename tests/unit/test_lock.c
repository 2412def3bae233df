// SPDX-License-Identifier: MIT
/* Image locks (io/lock.c): the bytes each kind of open holds, which opens
 * refuse which, create that doesn't truncate a file in use, the backing
 * chain, release at close (io_uring keeps registered fds open), and the
 * fallback where the kernel has no OFD locks. The byte sets are those
 * qemu-io and qemu-img 7.2 were seen to hold in /proc/locks. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "io.h"
#include "noofd.h"
#include "test.h"

/* Bytes held, as a mask: bit i for byte 100 + i, bit 4 + i for 200 + i. */
#define RW     0xab   /* 100 101 103, 201 203 */
#define RO     0xa1   /* 100, 201 203 */
#define SHARE  0x01   /* 100 */
#define CREATE 0x8a   /* 101 103, 203 */

/* The bytes of path that open file descriptions (any but a probe's own)
 * hold: F_OFD_GETLK reports whoever would block a write lock there. */
static unsigned held(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned mask = 0;

	CHECK(fd >= 0);
	for (int i = 0; i < 8; i++) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
				    .l_start = (i < 4 ? 100 : 196) + i, .l_len = 1 };

		CHECK(fcntl(fd, F_OFD_GETLK, &fl) == 0);
		if (fl.l_type != F_UNLCK)
			mask |= 1u << i;
	}
	close(fd);
	return mask;
}

static void tmpfile_at(char *path)
{
	int fd;

	strcpy(path, "/tmp/uqcow-test-lock-XXXXXX");
	fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK(write(fd, "data", 4) == 4);
	close(fd);
}

static const struct {
	const char *name;
	unsigned flags, bytes;
} modes[] = {
	{ "rw", IO_RDWR, RW },
	{ "ro", 0, RO },
	{ "share", IO_SHARE, SHARE },
	{ "create", IO_RDWR | IO_CREATE, CREATE },
};

#define NMODES (sizeof(modes) / sizeof(modes[0]))

static void bytes_per_mode(void)
{
	char path[64];

	tmpfile_at(path);
	for (size_t i = 0; i < NMODES; i++) {
		struct io_file *f;

		test_where = modes[i].name;
		CHECK(io_file_open(path, modes[i].flags, &f) == 0);
		CHECK(f->locked && f->lock_err == 0);
		CHECK(held(path) == modes[i].bytes);
		io_file_close(f);
		CHECK(held(path) == 0);
	}
	unlink(path);
	test_where = "";
}

/* What an opener gets while a holder has the file: QEMU's rules. "" is
 * success, else the start of the message after the path. */
static const char *const verdict[4][4] = {
	/* holder rw:     opener rw, ro, share, create */
	{ "Failed to get \"write\" lock", "Failed to get shared \"write\" lock", "",
	  "Failed to get \"write\" lock" },
	/* holder ro */
	{ "Failed to get \"write\" lock", "", "", "Failed to get \"write\" lock" },
	/* holder share */
	{ "", "", "", "" },
	/* holder create */
	{ "Failed to get \"resize\" lock", "Failed to get shared \"write\" lock", "",
	  "Failed to get \"resize\" lock" },
};

static void conflicts(void)
{
	char path[64], where[64];

	tmpfile_at(path);
	for (size_t h = 0; h < NMODES; h++)
		for (size_t o = 0; o < NMODES; o++) {
			const char *want = verdict[h][o];
			struct io_file *hf, *of;
			int ret;

			snprintf(where, sizeof(where), "%s holds, %s opens",
				 modes[h].name, modes[o].name);
			test_where = where;
			CHECK(io_file_open(path, modes[h].flags, &hf) == 0);
			uq_errclear();
			ret = io_file_open(path, modes[o].flags, &of);
			if (!*want) {
				CHECK(ret == 0);
				CHECK(held(path) == (modes[h].bytes | modes[o].bytes));
				io_file_close(of);
			} else {
				const char *msg = uq_errmsg();
				char hint[160];

				CHECK(ret == -EAGAIN);
				CHECK(!strncmp(msg, path, strlen(path)));
				CHECK(!strncmp(msg + strlen(path), ": ", 2));
				CHECK(!strncmp(msg + strlen(path) + 2, want, strlen(want)));
				snprintf(hint, sizeof(hint), "Is another process using the "
					 "image [%s]?", path);
				CHECK(strstr(msg, hint) != NULL);
				/* the refused open keeps nothing */
				CHECK(held(path) == modes[h].bytes);
			}
			io_file_close(hf);
			CHECK(held(path) == 0);
		}
	unlink(path);
	test_where = "";
}

/* create truncates only what nobody uses */
static void create_in_use(void)
{
	char path[64];
	struct io_file *hf, *f, *c;
	struct stat st;

	tmpfile_at(path);
	CHECK(io_file_open(path, IO_SHARE, &hf) == 0);
	CHECK(io_file_open(path, 0, &f) == 0);
	CHECK(io_file_open(path, IO_RDWR | IO_CREATE, &c) == -EAGAIN);
	CHECK(stat(path, &st) == 0 && st.st_size == 4);
	io_file_close(f);
	/* a force-share reader doesn't keep create out (nor does QEMU's) */
	CHECK(io_file_open(path, IO_RDWR | IO_CREATE, &f) == 0);
	CHECK(stat(path, &st) == 0 && st.st_size == 0);
	io_file_close(f);
	io_file_close(hf);
	CHECK(io_file_open(path, IO_RDWR | IO_SHARE, &c) == -EINVAL);
	unlink(path);
}

/* The image, its backing file, what close releases, the API's view. */
static void chain(const char *backend_name, enum uq_backend be)
{
	char dir[] = "/tmp/uqcow-test-lock-XXXXXX", base[96], top[96];
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = 1 << 20 };
	struct uq_open_opts o = { .struct_size = sizeof(o), .backend = be };
	struct uq_info info = { .struct_size = sizeof(info) };
	uint8_t buf[4096] = { 1 };
	uq_image *img, *img2;

	test_where = backend_name;
	CHECK(mkdtemp(dir) != NULL);
	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(top, sizeof(top), "%s/top.qcow2", dir);
	CHECK(uq_create(base, &co) == 0);
	co.backing_file = "base.qcow2";
	co.backing_format = "qcow2";
	CHECK(uq_create(top, &co) == 0);
	CHECK(held(base) == 0 && held(top) == 0);

	/* a writer holds its image as qemu-io does, its backing file as a
	 * reader; a write goes through the ring (registering the fd) */
	o.flags = UQ_OPEN_RDWR;
	CHECK(uq_open(top, &o, &img) == 0);
	CHECK(held(top) == RW && held(base) == RO);
	CHECK(uq_get_info(img, &info) == 0 && info.locked == 1 && info.lock_error == 0);
	CHECK(uq_pwrite(img, buf, sizeof(buf), 0, 0) == (ssize_t)sizeof(buf));
	CHECK(uq_flush(img) == 0);
	/* another handle in this process is another user */
	o.flags = 0;
	CHECK(uq_open(top, &o, &img2) == -EAGAIN);
	CHECK(strstr(uq_errmsg(), "Failed to get shared \"write\" lock") != NULL);
	o.flags = UQ_OPEN_FORCE_SHARE;
	CHECK(uq_open(top, &o, &img2) == 0);
	CHECK(held(top) == RW && held(base) == RO);
	CHECK(uq_close(img2) == 0);
	/* the base is only read: a second chain over it may open */
	o.flags = 0;
	CHECK(uq_open(base, &o, &img2) == 0);
	CHECK(uq_close(img2) == 0);
	/* released at close, whatever the ring still holds */
	CHECK(uq_close(img) == 0);
	CHECK(held(top) == 0 && held(base) == 0);

	o.flags = 0;
	CHECK(uq_open(top, &o, &img) == 0);
	CHECK(held(top) == RO && held(base) == RO);
	CHECK(uq_close(img) == 0);
	o.flags = UQ_OPEN_FORCE_SHARE;
	CHECK(uq_open(top, &o, &img) == 0);
	CHECK(held(top) == SHARE && held(base) == SHARE);
	CHECK(uq_close(img) == 0);
	o.flags = UQ_OPEN_FORCE_SHARE | UQ_OPEN_RDWR;
	CHECK(uq_open(top, &o, &img) == -EINVAL);
	CHECK(strstr(uq_errmsg(), "force-share can only be used with read-only") != NULL);
	CHECK(held(top) == 0 && held(base) == 0);

	/* create of an image in use is refused and leaves it whole */
	o.flags = 0;
	CHECK(uq_open(top, &o, &img) == 0);
	co.backing_file = NULL;
	co.backing_format = NULL;
	CHECK(uq_create(top, &co) == -EAGAIN);
	CHECK(uq_close(img) == 0);
	o.flags = 0;
	CHECK(uq_open(top, &o, &img) == 0);
	CHECK(uq_backing(img) != NULL);
	CHECK(uq_close(img) == 0);

	unlink(top);
	unlink(base);
	rmdir(dir);
	test_where = "";
}

static void memory_file(void)
{
	static const uint8_t zeros[512];
	struct uq_open_opts o = { .struct_size = sizeof(o), .backend = UQ_IO_MEM,
				  .format = UQ_FMT_RAW, .mem_data = zeros,
				  .mem_len = sizeof(zeros) };
	struct uq_info info = { .struct_size = sizeof(info) };
	uq_image *img;

	CHECK(uq_open("mem", &o, &img) == 0);
	CHECK(uq_get_info(img, &info) == 0 && info.locked == 0 && info.lock_error == 0);
	CHECK(uq_close(img) == 0);
}

/* In a child where fcntl has no OFD commands: opens go on unlocked and
 * say why; two writers aren't kept apart (nor are they by QEMU there). */
static int no_ofd_child(void)
{
	char path[64];
	struct io_file *f, *g;
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR,
				  .format = UQ_FMT_RAW };
	struct uq_info info = { .struct_size = sizeof(info) };
	uq_image *img;
	int ret = noofd_install();

	if (ret < 0) {
		printf("no-OFD fallback: SKIP: seccomp filter unavailable: %s\n",
		       strerror(-ret));
		return 77;
	}
	tmpfile_at(path);
	CHECK(io_file_open(path, IO_RDWR, &f) == 0);
	CHECK(!f->locked && f->lock_err == EINVAL);
	CHECK(io_file_open(path, IO_RDWR, &g) == 0);
	io_file_close(g);
	CHECK(uq_open(path, &o, &img) == 0);
	CHECK(uq_get_info(img, &info) == 0 && info.locked == 0 && info.lock_error == EINVAL);
	CHECK(uq_close(img) == 0);
	io_file_close(f);
	unlink(path);
	return 0;
}

static void no_ofd(void)
{
	pid_t pid;
	int st;

	fflush(stdout);   /* or the child prints it again */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(no_ofd_child());
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 77));
	if (WEXITSTATUS(st) == 0)
		printf("no-OFD fallback: ok\n");
}

int main(void)
{
	alarm(120);   /* a hang is a failure, not a stuck test run */
	bytes_per_mode();
	conflicts();
	create_in_use();
	chain("default backend", UQ_IO_AUTO);
	chain("psync", UQ_IO_PSYNC);
	memory_file();
	no_ofd();
	printf("ok\n");
	return 0;
}
