// SPDX-License-Identifier: MIT
/* Crash-test harness: runs guest operations on a live image under the fault
 * layer, keeps what each flush promised, and checks rebuilt crash states. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crash.h"
#include "error.h"
#include "error.h"
#include "refwalk.h"

/* Reports per run beyond this many are counted, not printed; and no more
 * than this many runs keep their failing states on disk. */
#define MAX_PRINTED 5
#define MAX_KEPT_RUNS 8

static unsigned long printed;   /* failure lines, over all runs of the program */

static bool quiet(void)
{
	return printed >= 12 * MAX_PRINTED;
}

uint64_t rnd(struct run *R)
{
	/* xorshift64*: cheap, and a seed reproduces a run exactly */
	R->rng ^= R->rng >> 12;
	R->rng ^= R->rng << 25;
	R->rng ^= R->rng >> 27;
	return R->rng * 0x2545f4914f6cdd1dull;
}

uint64_t rnd_below(struct run *R, uint64_t n)
{
	return n ? rnd(R) % n : 0;
}

void fail(struct run *R, const char *fmt, ...)
{
	va_list ap;

	if (R->failures++ >= MAX_PRINTED || quiet())
		return;
	printed++;
	fprintf(stderr, "FAIL %s bits=%u lazy=%d seed=%llu: ", R->name, R->c.bits, R->c.lazy,
		(unsigned long long)R->c.seed);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void fill_random(struct run *R, uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = rnd(R);

		memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
	}
}

/* Runs of a few random bytes: deflate shrinks them well below a cluster,
 * and no two clusters are alike, so a misplaced one is noticed. */
void fill_compressible(struct run *R, uint8_t *buf, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t run = 16 + (size_t)rnd_below(R, 112);
		uint8_t v = (uint8_t)rnd(R);

		if (run > len - i)
			run = len - i;
		memset(buf + i, v, run);
		i += run;
	}
}

/* With UQ_CRASH_TRACE set, every guest operation goes to stderr as a line
 * a reproducer can replay: "write OFF LEN FLAGS", "flush", ... */
static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...)
{
	static int on = -1;
	va_list ap;

	if (on < 0)
		on = getenv("UQ_CRASH_TRACE") != NULL;
	if (!on)
		return;
	fputs("trace: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- files ---- */

static int write_file(const char *path, const void *data, uint64_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	uint64_t done = 0;

	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = write(fd, (const uint8_t *)data + done, (size_t)(len - done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return -EIO;
		}
		done += (uint64_t)n;
	}
	close(fd);
	return 0;
}

static int read_file(const char *path, uint8_t **data, uint64_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint64_t done = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !(*data = malloc(st.st_size ? (size_t)st.st_size : 1))) {
		close(fd);
		return -ENOMEM;
	}
	while (done < (uint64_t)st.st_size) {
		ssize_t n = read(fd, *data + done, (size_t)st.st_size - done);

		if (n <= 0) {
			close(fd);
			free(*data);
			return -EIO;
		}
		done += (uint64_t)n;
	}
	*len = done;
	close(fd);
	return 0;
}

/* ---- the model ---- */

/* A copy of the guest as the model has it now: bytes and unknown sectors. */
static void copy_guest(const struct run *R, uint8_t **data, uint8_t **unknown)
{
	uint64_t ns = R->size / SECTOR;

	*data = malloc(R->size ? R->size : 1);
	*unknown = malloc(ns ? ns : 1);
	if (!*data || !*unknown) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	memcpy(*data, R->cur, R->size);
	memcpy(*unknown, R->unknown, ns);
}

/* The first sector of [0, size) where got differs from want, skipping
 * those a failed operation left unknown; UINT64_MAX where none does. */
static uint64_t first_mismatch(const uint8_t *got, const uint8_t *want, const uint8_t *unknown,
			       uint64_t size)
{
	for (uint64_t s = 0; s < size / SECTOR; s++)
		if (!unknown[s] && memcmp(got + s * SECTOR, want + s * SECTOR, SECTOR))
			return s;
	return UINT64_MAX;
}

static void push_snap(struct run *R)
{
	struct snap *s;

	if (R->nsnaps == R->scap) {
		R->scap = R->scap ? R->scap * 2 : 16;
		R->snaps = realloc(R->snaps, R->scap * sizeof(*R->snaps));
		if (!R->snaps) {
			fprintf(stderr, "out of memory\n");
			exit(1);
		}
	}
	s = &R->snaps[R->nsnaps++];
	s->pos = io_fault_nops(R->fl);
	s->ngops = R->ngops;
	s->size = R->size;
	copy_guest(R, &s->data, &s->unknown);
}

static struct gop *push_gop(struct run *R)
{
	if (R->ngops == R->gcap) {
		R->gcap = R->gcap ? R->gcap * 2 : 64;
		R->gops = realloc(R->gops, R->gcap * sizeof(*R->gops));
		if (!R->gops) {
			fprintf(stderr, "out of memory\n");
			exit(1);
		}
	}
	memset(&R->gops[R->ngops], 0, sizeof(R->gops[0]));
	return &R->gops[R->ngops++];
}

static int resize_model(struct run *R, uint64_t size)
{
	uint64_t old = R->size;
	uint8_t *c = realloc(R->cur, size ? size : 1);
	uint8_t *u = realloc(R->unknown, size / SECTOR ? size / SECTOR : 1);

	if (!c || !u)
		return -ENOMEM;
	R->cur = c;
	R->unknown = u;
	if (size > old) {
		memset(c + old, 0, size - old);
		memset(u + old / SECTOR, 0, (size - old) / SECTOR);
	}
	R->size = size;
	return 0;
}

int run_start(struct run *R, const char *name, const struct cfg *c)
{
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = c->size,
				     .cluster_size = c->cs, .refcount_bits = c->bits,
				     .lazy_refcounts = c->lazy };
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR | c->open_flags,
				  .refcount_cache_size = c->rc_cache,
				  .l2_cache_size = c->l2_cache };
	char bpath[128];
	uint8_t *file = NULL;
	uint64_t flen = 0;
	int ret;

	R->name = name;
	R->c = *c;
	R->rng = c->seed * 0x9e3779b97f4a7c15ull + 0x1234567;
	if (!R->samples_per_interval)
		R->samples_per_interval = 8;
	/* tmpfs where there is one: crash states reopened from disk are
	 * flushed on close, and real fsyncs would dominate the run time */
	snprintf(R->dir, sizeof(R->dir), "%s/uqcrash.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(R->dir))
		return -errno;
	snprintf(R->top, sizeof(R->top), "%s/top.qcow2", R->dir);
	snprintf(R->state, sizeof(R->state), "%s/state.qcow2", R->dir);
	if (c->backing) {
		/* a raw backing file shorter than the image: reads past it are zeros */
		uint64_t blen = c->size * 3 / 4 / SECTOR * SECTOR;
		uint8_t *b = malloc(blen);

		if (!b)
			return -ENOMEM;
		fill_random(R, b, blen);
		snprintf(bpath, sizeof(bpath), "%s/backing.raw", R->dir);
		ret = write_file(bpath, b, blen);
		free(b);
		if (ret < 0)
			return ret;
		co.backing_file = "backing.raw";
		co.backing_format = "raw";
	}
	trace("create cs=%u bits=%u lazy=%d backing=%d size=0x%llx", c->cs, c->bits, c->lazy,
	      c->backing, (unsigned long long)c->size);
	ret = uq_create(R->top, &co);
	if (ret < 0) {
		fprintf(stderr, "%s: create: %s\n", name, uq_errmsg());
		return ret;
	}
	if (c->bitmap_gran) {
		/* added by a clean open and close: the recorded run starts
		 * from an image whose bitmap QEMU would trust */
		uq_image *b;

		ret = uq_open(R->top, &(struct uq_open_opts){ .struct_size = sizeof(o),
							     .flags = UQ_OPEN_RDWR,
							     .backend = UQ_IO_PSYNC }, &b);
		if (ret == 0) {
			ret = uq_bitmap_add(b, "b", c->bitmap_gran, 1);
			int r2 = uq_close(b);

			ret = ret ? ret : r2;
		}
		if (ret < 0) {
			fprintf(stderr, "%s: bitmap: %s\n", name, uq_errmsg());
			return ret;
		}
	}
	if (c->backing) {
		/* the engine opens a backing file only for images on disk */
		o.backend = UQ_IO_PSYNC;
	} else {
		ret = read_file(R->top, &file, &flen);
		if (ret < 0)
			return ret;
		o.backend = UQ_IO_MEM;
		o.mem_data = file;
		o.mem_len = flen;
	}
	ret = uq_open(R->top, &o, &R->img);
	free(file);
	if (ret < 0) {
		fprintf(stderr, "%s: open: %s\n", name, uq_errmsg());
		return ret;
	}
	ret = uq_image_wrap_file(R->img, io_fault_wrap_fn, &R->fl);
	if (ret < 0)
		return ret;
	R->reftable_at_start = R->img->h.refcount_table_offset;
	R->size = 0;
	ret = resize_model(R, c->size);
	if (ret == 0 && uq_pread(R->img, R->cur, c->size, 0) != (ssize_t)c->size)
		ret = -EIO;
	if (ret < 0)
		return ret;
	push_snap(R);   /* what the image held at the start */
	return 0;
}

int run_close(struct run *R)
{
	uint64_t f0 = io_fault_failures(R->fl);
	int ret;

	if (!R->img)
		return 0;
	if (R->img->h.refcount_table_offset != R->reftable_at_start)
		R->reftable_grew = true;
	uq_errclear();
	ret = uq_close(R->img);   /* its write-back is recorded too */
	R->img = NULL;
	if (ret < 0 && !R->may_fail)
		fail(R, "close failed: %s", uq_errmsg());
	if (ret == 0 && io_fault_failures(R->fl) > f0)
		fail(R, "close returned success though a write failed");
	return ret;
}

void run_free(struct run *R)
{
	static unsigned kept;
	char path[160];

	if (R->img)
		uq_close(R->img);
	io_fault_free(R->fl);
	for (size_t i = 0; i < R->ngops; i++)
		free(R->gops[i].data);
	for (size_t i = 0; i < R->nsnaps; i++) {
		free(R->snaps[i].data);
		free(R->snaps[i].unknown);
	}
	for (size_t i = 0; i < R->nms; i++) {
		free(R->ms[i].data);
		free(R->ms[i].unknown);
	}
	free(R->ms);
	free(R->gops);
	free(R->snaps);
	free(R->cur);
	free(R->unknown);
	if (!R->dir[0])
		return;
	/* keep the evidence of a failure, for the first few runs that fail */
	if (R->failures && kept < MAX_KEPT_RUNS) {
		kept++;
		fprintf(stderr, "  failing states kept in %s\n", R->dir);
		return;
	}
	for (unsigned long i = 0; i <= R->failures + 4; i++) {
		static const char *const names[] = { "top.qcow2", "state.qcow2", "backing.raw",
						     "qemu-check.out" };

		if (i < 4)
			snprintf(path, sizeof(path), "%s/%s", R->dir, names[i]);
		else
			snprintf(path, sizeof(path), "%s/fail-%lu.qcow2", R->dir, i - 4);
		unlink(path);
	}
	rmdir(R->dir);
}

/* ---- guest operations ---- */

struct opctx {
	size_t start;
	uint64_t failures;
};

static struct opctx op_begin(struct run *R)
{
	uq_errclear();
	return (struct opctx){ io_fault_nops(R->fl), io_fault_failures(R->fl) };
}

/* Record what a guest operation did to [off, off + len). expect: what a
 * successful one must read back, or NULL if only the image can say
 * (discard: zeros or the backing file). */
static int op_end(struct run *R, struct opctx x, const char *what, int ret, uint64_t off,
		  uint64_t len, const uint8_t *expect)
{
	bool faulted = io_fault_failures(R->fl) > x.failures;
	struct gop *g;

	if (ret < 0 && !R->may_fail)
		fail(R, "%s at 0x%llx+0x%llx failed: %s", what, (unsigned long long)off,
		     (unsigned long long)len, uq_errmsg());
	else if (ret < 0 && !uq_errmsg()[0])
		fail(R, "%s at 0x%llx+0x%llx failed (%s) without a message", what,
		     (unsigned long long)off, (unsigned long long)len, strerror(-ret));
	if (ret >= 0 && faulted)
		fail(R, "%s at 0x%llx+0x%llx returned success though a write failed",
		     what, (unsigned long long)off, (unsigned long long)len);
	g = push_gop(R);
	g->what = what;
	g->start = x.start;
	g->off = off;
	g->len = len;
	if (ret < 0) {
		/* nothing was promised: the range may read old, new or torn */
		memset(R->unknown + off / SECTOR, 1, len / SECTOR);
		return ret;
	}
	g->data = malloc(len ? len : 1);
	if (!g->data)
		exit(1);
	if (len && uq_pread(R->img, g->data, len, off) != (ssize_t)len) {
		fail(R, "reading back after %s failed: %s", what, uq_errmsg());
		memset(g->data, 0, len);
	}
	if (expect && memcmp(g->data, expect, len))
		fail(R, "%s at 0x%llx+0x%llx: the live image reads back something else",
		     what, (unsigned long long)off, (unsigned long long)len);
	memcpy(R->cur + off, g->data, len);
	memset(R->unknown + off / SECTOR, 0, len / SECTOR);
	return ret;
}

int g_write(struct run *R, uint64_t off, uint64_t len, unsigned flags)
{
	uint8_t *buf = malloc(len);
	struct opctx x;
	ssize_t n;

	if (!buf)
		exit(1);
	if (flags & UQ_WRITE_COMPRESSED)
		fill_compressible(R, buf, len);
	else
		fill_random(R, buf, len);
	trace("write 0x%llx 0x%llx %u", (unsigned long long)off, (unsigned long long)len, flags);
	x = op_begin(R);
	n = uq_pwrite(R->img, buf, len, off, flags);
	if (n >= 0 && n != (ssize_t)len)
		n = -EIO;
	op_end(R, x, flags & UQ_WRITE_COMPRESSED ? "compressed write" : "write", (int)n, off,
	       len, buf);
	free(buf);
	return (int)n;
}

int g_zero(struct run *R, uint64_t off, uint64_t len, unsigned flags)
{
	uint8_t *z = calloc(1, len ? len : 1);
	struct opctx x;

	trace("zero 0x%llx 0x%llx %u", (unsigned long long)off, (unsigned long long)len, flags);
	x = op_begin(R);
	int ret = uq_write_zeroes(R->img, off, len, flags);

	op_end(R, x, flags & UQ_ZERO_UNMAP ? "write-zeroes unmap" : "write-zeroes", ret, off,
	       len, z);
	free(z);
	return ret;
}

int g_discard(struct run *R, uint64_t off, uint64_t len)
{
	struct opctx x;

	trace("discard 0x%llx 0x%llx", (unsigned long long)off, (unsigned long long)len);
	x = op_begin(R);
	int ret = uq_discard(R->img, off, len);

	return op_end(R, x, "discard", ret, off, len, NULL);
}

int g_flush(struct run *R)
{
	struct opctx x;

	trace("flush");
	x = op_begin(R);
	int ret = uq_flush(R->img);
	bool faulted = io_fault_failures(R->fl) > x.failures;

	if (ret < 0 && !R->may_fail)
		fail(R, "flush failed: %s", uq_errmsg());
	else if (ret < 0 && !uq_errmsg()[0])
		fail(R, "flush failed (%s) without a message", strerror(-ret));
	if (ret == 0 && faulted)
		fail(R, "flush returned success though a write failed");
	if (ret == 0 && !faulted)
		push_snap(R);
	return ret;
}

/* Completions of g_aflush's three requests, in the order they came. */
struct aflush_tag {
	struct run *R;
	int id, *order, *n;
	ssize_t res;
	size_t pos;            /* fault record position at its completion */
	uint64_t fails;        /* failed changes by then */
	char msg[256];         /* the engine's message as it completed */
	char sub_msg[256];     /* ... and as its submission returned: a failure
				* found then completes later, and the next
				* call clears the thread's message */
};

static void aflush_cb(void *arg, ssize_t res)
{
	struct aflush_tag *t = arg;

	t->res = res;
	t->pos = io_fault_nops(t->R->fl);
	t->fails = io_fault_failures(t->R->fl);
	snprintf(t->msg, sizeof(t->msg), "%s", uq_errmsg());
	t->order[(*t->n)++] = t->id;
}

/* A request refused at submission completes there, with its message. */
static void aflush_refused(struct aflush_tag *t, int ret)
{
	aflush_cb(t, ret);
}

/* op_end reads the message of a failure: put back the one it had. */
static void aflush_msg(const struct aflush_tag *t)
{
	uq_errclear();
	if (t->res < 0 && (t->msg[0] || t->sub_msg[0]))
		uq_seterr((int)t->res, "%s", t->msg[0] ? t->msg : t->sub_msg);
}

int g_aflush(struct run *R, uint64_t off1, uint64_t len1, bool discard1, uint64_t off2,
	     uint64_t len2)
{
	uint8_t *b1 = malloc(len1 ? len1 : 1), *b2 = malloc(len2 ? len2 : 1);
	int order[3], n = 0;
	struct aflush_tag t[3];
	struct opctx x1, x2;
	uint64_t now, f0, fa;
	int ret;

	if (!b1 || !b2)
		exit(1);
	fill_random(R, b1, len1);
	fill_random(R, b2, len2);
	for (int i = 0; i < 3; i++)
		t[i] = (struct aflush_tag){ .R = R, .id = i, .order = order, .n = &n };
	trace("aflush %s 0x%llx 0x%llx, write 0x%llx 0x%llx", discard1 ? "discard" : "write",
	      (unsigned long long)off1, (unsigned long long)len1, (unsigned long long)off2,
	      (unsigned long long)len2);
	x1 = op_begin(R);
	ret = discard1 ? uq_aio_discard(R->img, off1, len1, aflush_cb, &t[0])
		       : uq_aio_write(R->img, b1, len1, off1, 0, aflush_cb, &t[0]);
	snprintf(t[0].sub_msg, sizeof(t[0].sub_msg), "%s", uq_errmsg());
	if (ret < 0)   /* after an earlier failure, writes stop */
		aflush_refused(&t[0], ret);
	/* the fault file runs requests as they are queued: all of range 1's
	 * changes are behind us, and the flush's come after them */
	fa = io_fault_failures(R->fl);
	ret = uq_aio_flush(R->img, aflush_cb, &t[1]);
	snprintf(t[1].sub_msg, sizeof(t[1].sub_msg), "%s", uq_errmsg());
	if (ret < 0)
		aflush_refused(&t[1], ret);
	x2 = (struct opctx){ io_fault_nops(R->fl), 0 };
	ret = uq_aio_write(R->img, b2, len2, off2, 0, aflush_cb, &t[2]);
	snprintf(t[2].sub_msg, sizeof(t[2].sub_msg), "%s", uq_errmsg());
	if (ret < 0)
		aflush_refused(&t[2], ret);
	while (n < 3)
		if (uq_poll(R->img, 1) < 0) {
			fail(R, "aflush: polling failed: %s", uq_errmsg());
			exit(1);
		}
	if (order[2] != 2 && t[2].res >= 0)
		fail(R, "aflush: the write completed before the flush it waited for");
	if (t[2].pos < t[1].pos && t[2].res >= 0)
		fail(R, "aflush: the write changed the file before the flush completed");
	/* op_end counts failures from x.failures to now: range 1 answers
	 * for those before fa */
	f0 = x1.failures;
	now = io_fault_failures(R->fl);
	x1.failures = f0 + (now - fa);
	if (t[0].res > 0 && t[0].res != (ssize_t)len1)
		t[0].res = -EIO;
	aflush_msg(&t[0]);
	op_end(R, x1, discard1 ? "discard" : "write", t[0].res < 0 ? (int)t[0].res : 0, off1,
	       len1, discard1 ? NULL : b1);
	if (t[1].res < 0 && !R->may_fail)
		fail(R, "aflush: flush failed: %s", t[1].msg);
	if (t[1].res < 0 && !t[1].msg[0] && !t[1].sub_msg[0])
		fail(R, "aflush: flush failed (%s) without a message", strerror((int)-t[1].res));
	/* The write goes out only after the flush, and a failed flush stops
	 * writes: if the write succeeded, so did the flush, and nothing may
	 * have failed since range 1. If it failed, its failures and the
	 * flush's can't be told apart from here: the flush's success is
	 * trusted only if nothing failed at all. */
	if (t[2].res >= 0 && (t[1].res < 0 || now != fa))
		fail(R, "aflush: the flush or the write behind it returned success though a "
		     "change failed");
	if (t[1].res == 0 && (t[2].res >= 0 || t[1].fails == fa) && fa == f0) {
		push_snap(R);
		R->snaps[R->nsnaps - 1].pos = t[1].pos;   /* durable from there on */
	}
	if (t[2].res > 0 && t[2].res != (ssize_t)len2)
		t[2].res = -EIO;
	x2.failures = now;
	aflush_msg(&t[2]);
	op_end(R, x2, "write", t[2].res < 0 ? (int)t[2].res : 0, off2, len2, b2);
	free(b1);
	free(b2);
	return t[1].res < 0 ? (int)t[1].res : 0;
}

int g_resize(struct run *R, uint64_t size)
{
	struct opctx x;
	uint64_t old = R->size;

	trace("resize 0x%llx", (unsigned long long)size);
	x = op_begin(R);
	int ret = uq_resize(R->img, size);
	struct uq_info info;
	struct gop *g;

	if (ret < 0 && !R->may_fail)
		fail(R, "resize to %llu failed: %s", (unsigned long long)size, uq_errmsg());
	else if (ret < 0 && !uq_errmsg()[0])
		fail(R, "resize failed (%s) without a message", strerror(-ret));
	if (ret == 0 && io_fault_failures(R->fl) > x.failures)
		fail(R, "resize returned success though a write failed");
	g = push_gop(R);
	g->what = "resize";
	g->start = x.start;
	g->resize = true;
	g->new_size = size;
	info.struct_size = sizeof(info);
	if (uq_get_info(R->img, &info) < 0 || resize_model(R, info.virtual_size) < 0)
		exit(1);
	if (ret == 0 && info.virtual_size != size)
		fail(R, "resize to %llu left the size at %llu", (unsigned long long)size,
		     (unsigned long long)info.virtual_size);
	if (ret < 0) {
		/* the header may name either size from now on, and a grown
		 * tail may read anything */
		g->off = old < size ? old : size;
		g->len = (old > size ? old : size) - g->off;
		if (g->off < R->size)
			memset(R->unknown + g->off / SECTOR, 1,
			       ((R->size < g->off + g->len ? R->size : g->off + g->len) - g->off) /
			       SECTOR);
		return ret;
	}
	/* what a grown tail reads (zeros, or the backing file) */
	g->off = old < R->size ? old : R->size;
	g->len = R->size - g->off;
	g->data = malloc(g->len ? g->len : 1);
	if (!g->data)
		exit(1);
	if (g->len && uq_pread(R->img, g->data, g->len, g->off) != (ssize_t)g->len)
		fail(R, "reading the grown tail failed: %s", uq_errmsg());
	memcpy(R->cur + g->off, g->data, g->len);
	memset(R->unknown + g->off / SECTOR, 0, g->len / SECTOR);
	return ret;
}

int g_amend(struct run *R, uint32_t bits)
{
	struct opctx x;

	trace("amend %u", bits);
	x = op_begin(R);
	int ret = uq_amend_refcount_bits(R->img, bits);

	/* the guest reads the same: nothing to model but the outcome */
	return op_end(R, x, "amend", ret, 0, 0, NULL);
}

bool msnap_live(const struct msnap *m)
{
	return m->deleted == SIZE_MAX && !m->uncertain;
}

struct msnap *find_msnap(struct run *R, const char *name)
{
	for (size_t i = 0; i < R->nms; i++)
		if (!strcmp(R->ms[i].name, name) && msnap_live(&R->ms[i]))
			return &R->ms[i];
	return NULL;
}

/* A refused snapshot operation: the guest reads what it read before. */
static void check_unchanged(struct run *R, const char *what)
{
	uint8_t *buf = malloc(R->size ? R->size : 1);
	struct uq_info info;
	uint64_t bad;

	info.struct_size = sizeof(info);
	if (!buf || uq_get_info(R->img, &info) < 0)
		exit(1);
	if (info.virtual_size != R->size)
		fail(R, "refused %s changed the virtual size to %llu", what,
		     (unsigned long long)info.virtual_size);
	else if (uq_pread(R->img, buf, R->size, 0) != (ssize_t)R->size)
		fail(R, "reading back after refused %s failed: %s", what, uq_errmsg());
	else if ((bad = first_mismatch(buf, R->cur, R->unknown, R->size)) != UINT64_MAX)
		fail(R, "refused %s changed guest sector 0x%llx", what,
		     (unsigned long long)(bad * SECTOR));
	free(buf);
}

static struct msnap *push_msnap(struct run *R, const char *name)
{
	struct msnap *m;

	if (R->nms == R->mscap) {
		R->mscap = R->mscap ? R->mscap * 2 : 16;
		R->ms = realloc(R->ms, R->mscap * sizeof(*R->ms));
		if (!R->ms)
			exit(1);
	}
	m = &R->ms[R->nms++];
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->created = R->ngops;
	m->deleted = SIZE_MAX;
	m->size = R->size;
	copy_guest(R, &m->data, &m->unknown);
	return m;
}

/* Apply: the guest becomes the snapshot, its size included. */
static int apply_model(struct run *R, struct opctx x, struct msnap *m, int ret)
{
	struct gop *g = push_gop(R);
	uint64_t old = R->size, hi = old > m->size ? old : m->size, bad;

	g->what = "snapshot apply";
	g->start = x.start;
	g->snapshot = g->resize = true;
	g->new_size = m->size;
	g->off = 0;
	if (ret < 0) {
		/* either state, or (after a failed header write) either size */
		g->len = hi;
		memset(R->unknown, 1, R->size / SECTOR);
		return ret;
	}
	if (resize_model(R, m->size) < 0)
		exit(1);
	g->len = m->size;
	g->data = malloc(m->size ? m->size : 1);
	if (!g->data)
		exit(1);
	if (uq_pread(R->img, g->data, m->size, 0) != (ssize_t)m->size)
		fail(R, "reading back after applying '%s' failed: %s", m->name, uq_errmsg());
	else if ((bad = first_mismatch(g->data, m->data, m->unknown, m->size)) != UINT64_MAX)
		fail(R, "after applying '%s' guest sector 0x%llx reads something else",
		     m->name, (unsigned long long)(bad * SECTOR));
	memcpy(R->cur, g->data, m->size);
	memcpy(R->unknown, m->unknown, m->size / SECTOR);
	return ret;
}

int g_snapshot(struct run *R, char kind, const char *name)
{
	const char *what = kind == 'c' ? "snapshot create" : kind == 'a' ? "snapshot apply"
									 : "snapshot delete";
	uint32_t before = R->img->snap.n;
	struct msnap *m = kind == 'c' ? NULL : find_msnap(R, name);
	struct opctx x;
	bool faulted;
	int ret;

	if (kind != 'c' && !m) {
		fail(R, "%s '%s': the workload has no such snapshot", what, name);
		return -ENOENT;
	}
	trace("snapshot %c %s", kind, name);
	x = op_begin(R);
	ret = kind == 'c' ? uq_snapshot_create(R->img, name) :
	      kind == 'a' ? uq_snapshot_apply(R->img, name) : uq_snapshot_delete(R->img, name);
	faulted = io_fault_failures(R->fl) > x.failures;
	if ((ret == -ENOTSUP && kind == 'c' && R->c.bits == 1) ||
	    (ret == -ERANGE && kind != 'd')) {
		/* refused for the refcount width: nothing may change */
		if (!uq_errmsg()[0])
			fail(R, "%s '%s' refused without a message", what, name);
		if (ret == -ENOTSUP && io_fault_nops(R->fl) != x.start)
			fail(R, "%s '%s' at refcount_bits=1 wrote to the file", what, name);
		if (R->img->snap.n != before)
			fail(R, "refused %s '%s' changed the snapshot count", what, name);
		if (!faulted)
			check_unchanged(R, what);
		op_end(R, x, kind == 'c' ? "snapshot create (refused)" :
		       "snapshot apply (refused)", 0, 0, 0, NULL);
		R->gops[R->ngops - 1].snapshot = true;
		return ret;
	}
	/* op_end checks the outcome of the others */
	if (kind == 'a' && ret < 0 && !R->may_fail)
		fail(R, "%s '%s' failed: %s", what, name, uq_errmsg());
	else if (kind == 'a' && ret < 0 && !uq_errmsg()[0])
		fail(R, "%s '%s' failed (%s) without a message", what, name, strerror(-ret));
	if (kind == 'a' && ret == 0 && faulted)
		fail(R, "%s '%s' returned success though a write failed", what, name);
	if (ret == 0 && R->img->snap.n != before + (kind == 'c') - (kind == 'd'))
		fail(R, "%s '%s' left %u snapshots where %u were", what, name,
		     R->img->snap.n, before);
	if (kind == 'c' && (m = push_msnap(R, name)) && ret < 0)
		m->uncertain = true;
	if (kind == 'd') {
		m->deleted = R->ngops;
		m->uncertain |= ret < 0;
	}
	if (kind == 'a')
		apply_model(R, x, m, ret);
	else
		op_end(R, x, what, ret, 0, 0, NULL);
	R->gops[R->ngops - 1].snapshot = true;
	/* synchronous: everything before it is on disk when it returns */
	if (ret == 0 && !faulted)
		push_snap(R);
	return ret;
}

/* ---- checking one state ---- */

size_t level_before(const struct run *R, size_t j)
{
	size_t l = 0;

	for (size_t i = 0; i < R->nsnaps; i++)
		if (R->snaps[i].pos <= j)
			l = i;
	return l;
}

size_t gops_before(const struct run *R, size_t j)
{
	size_t n = 0;

	while (n < R->ngops && R->gops[n].start < j)
		n++;
	return n;
}

static bool have_qemu_img(void)
{
	static int have = -1;

	if (have < 0) {
		have = system("qemu-img --version >/dev/null 2>&1") == 0;
		if (!have)
			fprintf(stderr, "qemu-img not found: its checks are skipped\n");
	}
	return have;
}

/* Is this one of the problem lines (qemu-img's or uq_check's, worded
 * alike) a snapshot operation's crash window may leave: COPIED clear on a
 * cluster whose refcount is 1 (the increments, or the decrements of a
 * delete, are on disk; the flags are not yet)? Harmless: the next write
 * copies the cluster needlessly. COPIED set on a shared cluster never is. */
static bool copied_lag_line(const char *line)
{
	size_t n = strlen(line);

	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	return !strncmp(line, "ERROR OFLAG_COPIED ", 19) && n >= 11 &&
	       !strncmp(line + n - 11, " refcount=1", 11);
}

/* qemu-img check found corruptions: are all of them the lag above? */
static bool only_copied_lag(const char *out)
{
	FILE *f = fopen(out, "r");
	char line[512];
	unsigned long lag = 0, other = 0;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "ERROR", 5)) {
			if (copied_lag_line(line))
				lag++;
			else
				other++;
		}
	fclose(f);
	return lag && !other;
}

static void qemu_check(struct run *R, const char *label, bool lag_ok)
{
	char cmd[512], out[160];
	int st, code;

	if (!have_qemu_img())
		return;
	snprintf(out, sizeof(out), "%s/qemu-check.out", R->dir);
	snprintf(cmd, sizeof(cmd), "qemu-img check -f qcow2 '%s' >'%s' 2>&1", R->state, out);
	st = system(cmd);
	code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	R->qemu_checks++;
	/* 0 clean, 3 leaks only: a crash may leak, never corrupt */
	if (code == 0 || code == 3)
		return;
	if (code == 2 && lag_ok && only_copied_lag(out))
		return;
	fail(R, "%s: qemu-img check exit %d:", label, code);
	snprintf(cmd, sizeof(cmd), "head -20 '%s' >&2", out);
	(void)!system(cmd);
}

static void save_failure(struct run *R, const struct io_fault_image *st, const char *label)
{
	char path[160];

	snprintf(path, sizeof(path), "%s/fail-%lu.qcow2", R->dir, R->failures);
	if (R->failures <= MAX_PRINTED && !quiet() && write_file(path, st->data, st->len) == 0)
		fprintf(stderr, "  %s: state saved as %s\n", label, path);
}

/* Every reference covered by a refcount, by refwalk.c's own walk of the
 * file as the writable open left it: the state itself, or for a dirty one
 * what the engine made of it when it rebuilt the refcounts on open. The
 * walk shares no code with that rebuild (uq_count_refs), so a reference
 * the rebuild misses shows here. A refcount above the references is a
 * leak, which a crash may leave. */
static void check_refcounts(struct run *R, uq_image *img, const char *label)
{
	struct rw_result res;
	uint64_t len, bad = 0;
	uint8_t *file;
	int ret;

	if (io_file_size(img->file, &len) < 0 || !(file = malloc(len ? len : 1)) ||
	    io_pread_full(img->file, file, len, 0) < 0) {
		fprintf(stderr, "can't read back the reopened image\n");
		exit(1);
	}
	ret = refwalk(file, len, &res);
	free(file);
	if (ret == -ENOMEM)
		exit(1);
	if (ret < 0 || res.nproblems) {
		fail(R, "%s: counting references: %s%s", label, res.problem,
		     res.nproblems > 1 ? " (and more)" : "");
		if (ret < 0)
			return;
	}
	for (size_t i = 0; i < res.ndiff; i++) {
		const struct rw_diff *d = &res.diff[i];

		if (!d->unknown && d->stored > d->refs)
			continue;
		if (bad++)
			continue;
		if (d->unknown)
			fail(R, "%s: cluster 0x%llx has %llu references but its refcount block "
			     "can't be read", label, (unsigned long long)(d->cluster << res.cluster_bits),
			     (unsigned long long)d->refs);
		else
			fail(R, "%s: cluster 0x%llx has refcount %llu but %llu references%s%s",
			     label, (unsigned long long)(d->cluster << res.cluster_bits),
			     (unsigned long long)d->stored, (unsigned long long)d->refs,
			     d->stored ? "" : " (an entry points at a free cluster)",
			     res.dirty ? " (the file is still marked dirty)" : "");
	}
	if (bad > 1)
		fprintf(stderr, "  ... %llu clusters in all have too low a refcount\n",
			(unsigned long long)bad);
	refwalk_free(&res);
}

/* COPIED must be set exactly where the refcount is 1 (qemu-img check counts
 * a mismatch as corruption): on L1 entries and on allocated L2 entries.
 * lag_ok: a snapshot operation was under way, so COPIED may still be clear
 * where a refcount is 1 (copied_lag_line). */
static void check_copied(struct run *R, uq_image *img, bool lag_ok, const char *label)
{
	const struct uq_geom *g = &img->g;
	uint8_t *tab = malloc(g->cluster_size);
	unsigned long bad = 0;

	if (!tab)
		exit(1);
	for (uint32_t i = 0; i < img->h.l1_size && bad < 3; i++) {
		uint64_t l2_off, rc;
		bool copied;

		if (uq_l1_decode(g, img->l1[i], &l2_off, &copied) < 0 || !l2_off)
			continue;   /* bad entries are check_refcounts's to report */
		if (uq_rc_get(img, l2_off >> g->cluster_bits, &rc) == 0 && (rc == 1) != copied &&
		    !(lag_ok && rc == 1) && !bad++)
			fail(R, "%s: L1 entry %u: L2 table 0x%llx has refcount %llu but COPIED is %s",
			     label, i, (unsigned long long)l2_off, (unsigned long long)rc,
			     copied ? "set" : "clear");
		if (io_pread_full(img->file, tab, g->cluster_size, l2_off) < 0)
			continue;
		for (uint64_t j = 0; j < g->l2_entries && bad < 3; j++) {
			const uint8_t *e = tab + j * g->l2_entry_bytes;
			struct uq_l2map m;

			if (uq_l2_decode(g, uq_be64(e), g->extended_l2 ? uq_be64(e + 8) : 0, &m) < 0 ||
			    m.type == UQ_C_COMPRESSED || !m.host_off)
				continue;
			if (uq_rc_get(img, m.host_off >> g->cluster_bits, &rc) == 0 &&
			    (rc == 1) != m.copied && !(lag_ok && rc == 1) && !bad++)
				fail(R, "%s: guest cluster 0x%llx: host cluster 0x%llx has refcount "
				     "%llu but COPIED is %s", label,
				     (unsigned long long)(((uint64_t)i * g->l2_entries + j) *
							  g->cluster_size),
				     (unsigned long long)m.host_off, (unsigned long long)rc,
				     m.copied ? "set" : "clear");
		}
	}
	free(tab);
}

/* Could the guest read p at sector s? The flushed contents, or what one
 * of the operations since may have left there. */
static bool sector_ok(const struct run *R, const struct snap *S, size_t glo, size_t ghi,
		      uint64_t s, const uint8_t *p)
{
	uint64_t pos = s * SECTOR;

	if (pos < S->size && (S->unknown[s] || !memcmp(p, S->data + pos, SECTOR)))
		return true;
	/* past the flushed size, a failed resize of any age may show through */
	for (size_t i = 0; pos >= S->size && i < glo; i++) {
		const struct gop *g = &R->gops[i];

		if (g->resize && !g->data && pos >= g->off && pos < g->off + g->len)
			return true;
	}
	for (size_t i = ghi; i-- > glo;) {
		const struct gop *g = &R->gops[i];

		if (pos < g->off || pos >= g->off + g->len)
			continue;
		if (!g->data || !memcmp(p, g->data + (pos - g->off), SECTOR))
			return true;
	}
	return false;
}

/* For a failure report: where the sector lives in the crash state, which
 * guest operations wrote it and which recorded writes hit its host cluster. */
static void explain_sector(const struct run *R, uq_image *img, uint64_t s, const uint8_t *got)
{
	uint64_t pos = s * SECTOR, cs = img->g.cluster_size;
	struct uq_extent e = { .struct_size = sizeof(e) };
	if (uq_block_status(img, pos, SECTOR, &e) == 0)
		fprintf(stderr, "    sector 0x%llx: present=%d zero=%d data=%d compressed=%d "
			"host=0x%llx\n", (unsigned long long)pos, e.present, e.zero, e.data,
			e.compressed, e.has_offset ? (unsigned long long)e.offset : 0ull);
	fprintf(stderr, "    reads %02x%02x%02x%02x...\n", got[0], got[1], got[2], got[3]);
	for (size_t i = 0; i < R->nsnaps; i++) {
		const struct snap *S = &R->snaps[i];

		if (pos < S->size)
			fprintf(stderr, "    flush #%zu (record pos %zu, after guest op %zu): "
				"%02x%02x%02x%02x%s\n", i, S->pos, S->ngops,
				S->data[pos], S->data[pos + 1], S->data[pos + 2], S->data[pos + 3],
				memcmp(S->data + pos, got, SECTOR) ? "" : " (matches)");
	}
	for (size_t i = 0; i < R->ngops; i++) {
		const struct gop *g = &R->gops[i];

		if (pos < g->off || pos >= g->off + g->len)
			continue;
		fprintf(stderr, "    guest op %zu: %s 0x%llx+0x%llx issued at record pos %zu%s\n",
			i, g->what, (unsigned long long)g->off, (unsigned long long)g->len,
			g->start, g->data && !memcmp(g->data + (pos - g->off), got, SECTOR) ?
			" (matches)" : "");
	}
	if (!e.has_offset)
		return;
	for (size_t i = 0; i < io_fault_nops(R->fl); i++) {
		const struct io_fault_op *op = io_fault_op(R->fl, i);
		uint64_t c = e.offset / cs * cs;

		if (op->kind == IO_FAULT_WRITE && op->off < c + cs && op->off + op->len > c)
			fprintf(stderr, "    record op %zu: write 0x%llx+0x%llx over its host "
				"cluster\n", i, (unsigned long long)op->off,
				(unsigned long long)op->len);
	}
}

static void check_data(struct run *R, uq_image *img, size_t level, size_t glo, size_t ghi,
		       const char *label)
{
	const struct snap *S = &R->snaps[level];
	struct uq_info info;
	uint64_t vs, bad = 0, first = 0;
	bool size_ok;
	uint8_t *buf;

	info.struct_size = sizeof(info);
	if (uq_get_info(img, &info) < 0)
		exit(1);
	vs = info.virtual_size;
	/* the flushed size, one set since, or one a failed resize (of any
	 * age: nothing told the guest what became of it) may have written */
	size_ok = vs == S->size;
	for (size_t i = 0; i < ghi && !size_ok; i++)
		size_ok = R->gops[i].resize && R->gops[i].new_size == vs &&
			  (i >= glo || !R->gops[i].data);
	if (!size_ok) {
		fail(R, "%s: virtual size %llu, but the guest last flushed %llu", label,
		     (unsigned long long)vs, (unsigned long long)S->size);
		return;
	}
	buf = malloc(vs ? vs : 1);
	if (!buf)
		exit(1);
	if (uq_pread(img, buf, vs, 0) != (ssize_t)vs) {
		fail(R, "%s: reading the guest failed: %s", label, uq_errmsg());
		free(buf);
		return;
	}
	for (uint64_t s = 0; s < vs / SECTOR; s++) {
		if (sector_ok(R, S, glo, ghi, s, buf + s * SECTOR))
			continue;
		if (!bad++)
			first = s;
	}
	if (bad) {
		size_t touching = 0;

		for (size_t i = glo; i < ghi; i++)
			touching += first * SECTOR >= R->gops[i].off &&
				    first * SECTOR < R->gops[i].off + R->gops[i].len;
		fail(R, "%s: %llu guest sectors read what was neither flushed nor written "
		     "since; the first at 0x%llx (flush #%zu in force, %zu later operations "
		     "touch it)", label, (unsigned long long)bad,
		     (unsigned long long)(first * SECTOR), level, touching);
		if (R->verbose)
			explain_sector(R, img, first, buf + first * SECTOR);
	}
	free(buf);
}

static bool dirty_bit(const struct io_fault_image *st)
{
	/* incompatible_features, big-endian at byte 72: bit 0 is "dirty" */
	return st->len >= 80 && (st->data[79] & 1);
}

/* uqcow's own check on the state as the crash left it (read-only: the
 * state itself, not what a writable open made of it): no corruption. */
/* The state as the crash left it, read-only: on disk (put back there, as
 * a writable open may have repaired it) or in memory. NULL: reported. */
static uq_image *open_state_ro(struct run *R, const struct io_fault_image *st, bool disk,
			       const char *why, const char *label)
{
	struct uq_open_opts o = { .struct_size = sizeof(o) };
	uq_image *img;

	if (disk) {
		if (write_file(R->state, st->data, st->len) < 0)
			return NULL;
		o.backend = UQ_IO_PSYNC;
	} else {
		o.backend = UQ_IO_MEM;
		o.mem_data = st->data;
		o.mem_len = st->len;
	}
	if (uq_open(R->state, &o, &img) < 0) {
		fail(R, "%s: %s: the image does not open: %s", label, why, uq_errmsg());
		return NULL;
	}
	return img;
}

static void count_lag(void *arg, const char *line)
{
	if (copied_lag_line(line))
		++*(uint64_t *)arg;
}

static void uq_check_state(struct run *R, const struct io_fault_image *st, bool disk,
			   bool lag_ok, const char *label)
{
	uint64_t lag = 0;
	struct uq_check_result res = { .struct_size = sizeof(res), .report = count_lag,
				       .arg = &lag };
	uq_image *img = open_state_ro(R, st, disk, "uqcow check", label);

	if (!img)
		return;
	if (uq_check(img, 0, &res) < 0)
		fail(R, "%s: uqcow check failed to run: %s", label, uq_errmsg());
	else if ((res.corruptions && !(lag_ok && res.corruptions == lag)) || res.check_errors)
		fail(R, "%s: uqcow check: %llu corruptions, %llu check errors", label,
		     (unsigned long long)res.corruptions, (unsigned long long)res.check_errors);
	R->uq_checks++;
	uq_close(img);
}

/* May (must) model snapshot m exist after a crash during operations
 * [glo, ghi)? Those before glo are durable; those in it may have landed. */
static bool may_exist(const struct msnap *m, size_t glo, size_t ghi)
{
	return m->created < ghi && (m->uncertain || m->deleted >= glo);
}

static bool must_exist(const struct msnap *m, size_t glo, size_t ghi)
{
	return !m->uncertain && m->created < glo && m->deleted >= ghi;
}

/* One snapshot of the state, viewed: the content it was taken with. */
static void check_snap_data(struct run *R, uq_image *img, const struct uq_snapshot_info *info,
			    const struct msnap *m, const char *label)
{
	uint64_t bad;
	uint8_t *buf;

	if (info->disk_size != m->size) {
		fail(R, "%s: snapshot '%s' has disk size %llu, taken at %llu", label, m->name,
		     (unsigned long long)info->disk_size, (unsigned long long)m->size);
		return;
	}
	if (uq_snapshot_view(img, info->id) < 0) {
		fail(R, "%s: snapshot '%s' can't be read: %s", label, m->name, uq_errmsg());
		return;
	}
	buf = malloc(m->size ? m->size : 1);
	if (!buf)
		exit(1);
	if (uq_pread(img, buf, m->size, 0) != (ssize_t)m->size)
		fail(R, "%s: reading snapshot '%s' failed: %s", label, m->name, uq_errmsg());
	else if ((bad = first_mismatch(buf, m->data, m->unknown, m->size)) != UINT64_MAX)
		fail(R, "%s: snapshot '%s' reads something else at 0x%llx than when it was "
		     "taken", label, m->name, (unsigned long long)(bad * SECTOR));
	free(buf);
}

/* The snapshots a state lists: only ones the workload took and that the
 * operations up to the crash allow; each reads as when it was taken; none
 * that must survive is missing. */
static void check_snapshots(struct run *R, const struct io_fault_image *st, bool disk,
			    size_t glo, size_t ghi, const char *label)
{
	bool *seen;
	uq_image *img;

	if (!R->nms || !(img = open_state_ro(R, st, disk, "reading the snapshots", label)))
		return;
	seen = calloc(R->nms, sizeof(*seen));
	if (!seen)
		exit(1);
	for (uint32_t i = 0; i < img->snap.n; i++) {
		struct uq_snapshot_info info;
		size_t k = R->nms;

		info.struct_size = sizeof(info);
		if (uq_snapshot_get(img, i, &info) < 0) {
			fail(R, "%s: snapshot %u: %s", label, i, uq_errmsg());
			continue;
		}
		/* names are never reused, so a name is one model snapshot */
		for (size_t j = 0; j < R->nms && k == R->nms; j++)
			if (!strcmp(R->ms[j].name, info.name))
				k = j;
		if (k == R->nms || seen[k]) {
			fail(R, "%s: snapshot '%s' %s", label, info.name,
			     k == R->nms ? "was never taken" : "is listed twice");
			continue;
		}
		seen[k] = true;
		if (!may_exist(&R->ms[k], glo, ghi)) {
			fail(R, "%s: snapshot '%s' exists, but %s", label, info.name,
			     R->ms[k].created >= ghi ? "it was taken after the crash"
						     : "its delete was durable");
			continue;
		}
		check_snap_data(R, img, &info, &R->ms[k], label);
		R->snap_checks++;
	}
	for (size_t k = 0; k < R->nms; k++)
		if (!seen[k] && must_exist(&R->ms[k], glo, ghi))
			fail(R, "%s: snapshot '%s' is missing, though it was durable", label,
			     R->ms[k].name);
	free(seen);
	uq_close(img);
}

/* Was a snapshot operation under way at the crash? */
static bool snapshot_in_flight(const struct run *R, size_t glo, size_t ghi)
{
	for (size_t i = glo; i < ghi; i++)
		if (R->gops[i].snapshot)
			return true;
	return false;
}

/* ---- the bitmap of a state ---- */

/* Does bit i of the bitmap cover a byte a guest op of [0, n) touched? */
static bool gops_touch(const struct run *R, size_t n, uint64_t lo, uint64_t hi)
{
	for (size_t g = 0; g < n && g < R->ngops; g++) {
		const struct gop *o = &R->gops[g];

		if (!o->resize && !o->snapshot && o->len && o->off < hi && lo < o->off + o->len)
			return true;
	}
	return false;
}

/* A crash leaves bitmap "b" in use, or written back exactly: every bit
 * set that a guest op certainly issued touched, none that no op issued
 * before the crash touched. Decoded here from the bytes, not by uqcow. */
static void check_bitmap(struct run *R, const struct io_fault_image *st, size_t gop_lo,
			 size_t gop_hi, const char *label)
{
	const uint8_t *d = st->data;
	uint64_t cs = R->c.cs, off, dir = 0, tab, ent, g = R->c.bitmap_gran;
	uint32_t flags;

	if (st->len < 112 || !(uq_be64(d + QCOW_HDR_AUTOCLEAR) & QCOW_AUTOCLEAR_BITMAPS)) {
		fail(R, "%s: the bitmaps autoclear bit is clear", label);
		return;
	}
	for (off = uq_be32(d + QCOW_HDR_HEADER_LENGTH); off + 32 <= cs && uq_be32(d + off);
	     off += 8 + ((uq_be32(d + off + 4) + 7ull) & ~7ull))
		if (uq_be32(d + off) == QCOW_EXT_BITMAPS && uq_be32(d + off + 8) == 1)
			dir = uq_be64(d + off + 24);
	if (!dir || dir + 32 > st->len) {
		fail(R, "%s: no bitmaps extension naming one bitmap", label);
		return;
	}
	flags = uq_be32(d + dir + 12);
	if (flags & QCOW_BMF_IN_USE) {
		R->bm_in_use++;       /* inconsistent, and says so */
		return;
	}
	tab = uq_be64(d + dir);
	ent = tab + 8 <= st->len ? uq_be64(d + tab) & QCOW_BME_OFFSET_MASK : 0;
	if (!(flags & QCOW_BMF_AUTO) || uq_be32(d + dir + 8) != 1 ||
	    (ent && ent + cs > st->len)) {
		fail(R, "%s: bitmap entry flags 0x%x, table size %u, data 0x%llx", label, flags,
		     uq_be32(d + dir + 8), (unsigned long long)ent);
		return;
	}
	for (uint64_t i = 0; i * g < R->size; i++) {
		bool set = ent && (d[ent + i / 8] >> (i % 8) & 1);
		bool must = gops_touch(R, gop_lo, i * g, (i + 1) * g);
		bool may = gops_touch(R, gop_hi, i * g, (i + 1) * g);

		if (set != must && set != may) {
			fail(R, "%s: bitmap bit %llu (guest 0x%llx) is %s, but the guest ops "
			     "before the crash %s it", label, (unsigned long long)i,
			     (unsigned long long)(i * g), set ? "set" : "clear",
			     set ? "never touched" : "touched");
			return;
		}
	}
	R->bm_exact++;
}

int check_image(struct run *R, const struct io_fault_image *st, size_t level,
		size_t gop_lo, size_t gop_hi, bool qemu, const char *label)
{
	bool lag_ok = snapshot_in_flight(R, gop_lo, gop_hi);
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR };
	unsigned long before = R->failures;
	bool disk = R->c.backing || qemu, dirty = dirty_bit(st);
	uq_image *img;
	int ret;

	qemu = qemu && have_qemu_img();
	if (R->c.bitmap_gran)
		check_bitmap(R, st, gop_lo, gop_hi, label);
	if (disk) {
		/* on disk next to the backing file, which the name is relative to */
		ret = write_file(R->state, st->data, st->len);
		if (ret < 0)
			return ret;
		o.backend = UQ_IO_PSYNC;
		/* qemu-img sees the state as the crash left it, unless refcounts
		 * are known stale (dirty): then as uqcow's open repaired it */
		if (qemu && !dirty)
			qemu_check(R, label, lag_ok);
	} else {
		o.backend = UQ_IO_MEM;
		o.mem_data = st->data;
		o.mem_len = st->len;
	}
	uq_errclear();
	ret = uq_open(R->state, &o, &img);
	if (ret < 0) {
		fail(R, "%s: the image does not open: %s", label, uq_errmsg());
		save_failure(R, st, label);
		return ret;
	}
	check_refcounts(R, img, label);
	check_copied(R, img, lag_ok, label);
	check_data(R, img, level, gop_lo, gop_hi, label);
	ret = uq_close(img);
	if (ret < 0)
		fail(R, "%s: closing the reopened image failed: %s", label, uq_errmsg());
	if (!dirty)
		uq_check_state(R, st, disk, lag_ok, label);
	if (qemu && dirty)
		qemu_check(R, label, lag_ok);
	/* last: on disk it puts the state back as the crash left it */
	check_snapshots(R, st, disk, gop_lo, gop_hi, label);
	if (R->failures != before)
		save_failure(R, st, label);
	return R->failures != before ? -EIO : 0;
}

/* ---- enumerating crash states ---- */

static const char *kind_name(enum io_fault_kind k)
{
	switch (k) {
	case IO_FAULT_WRITE: return "write";
	case IO_FAULT_PUNCH: return "punch";
	case IO_FAULT_TRUNCATE: return "truncate";
	case IO_FAULT_FLUSH: return "flush";
	case IO_FAULT_PREALLOC: return "prealloc";
	}
	return "?";
}

static void dump_ops(const struct run *R, size_t from, size_t to)
{
	for (size_t i = from; i < to && i < io_fault_nops(R->fl); i++) {
		const struct io_fault_op *op = io_fault_op(R->fl, i);

		fprintf(stderr, "    op %zu: %s 0x%llx+0x%llx\n", i, kind_name(op->kind),
			(unsigned long long)op->off, (unsigned long long)op->len);
	}
}

void dump_timeline(const struct run *R)
{
	size_t n = io_fault_nops(R->fl), g = 0, sn = 1;

	for (size_t i = 0; i <= n; i++) {
		for (; g < R->ngops && R->gops[g].start <= i; g++)
			fprintf(stderr, "  guest op %zu: %s 0x%llx+0x%llx%s\n", g, R->gops[g].what,
				(unsigned long long)R->gops[g].off,
				(unsigned long long)R->gops[g].len,
				R->gops[g].data ? "" : " FAILED");
		for (; sn < R->nsnaps && R->snaps[sn].pos <= i; sn++)
			fprintf(stderr, "  guest flush #%zu returned\n", sn);
		if (i < n)
			dump_ops(R, i, i + 1);
	}
}

static uint64_t hash_keep(const uint64_t *keep, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ keep[i]) * 1099511628211ull;
	return h;
}

/* A random crash between two flushes: each write since the last one made
 * it whole, not at all, or torn (a prefix of its sectors). */
static void random_keep(struct run *R, size_t d, uint64_t *keep, size_t m)
{
	for (size_t i = 0; i < m; i++) {
		const struct io_fault_op *op = io_fault_op(R->fl, d + i);
		uint64_t secs = io_fault_op_sectors(op), r = rnd_below(R, 8);

		if (r < 3)
			keep[i] = 0;
		else if (r == 3 && secs > 1)
			keep[i] = 1 + rnd_below(R, secs - 1);
		else
			keep[i] = UINT64_MAX;
	}
}

/* One sampled state: the durable image plus keep[i] sectors of op d + i. */
static void check_sample(struct run *R, const struct io_fault_image *durable, size_t d,
			 const uint64_t *keep, size_t m, const size_t ctx[4], bool qemu)
{
	struct io_fault_image st;
	char label[200];
	int kl;

	if (io_fault_image_copy(durable, &st) < 0)
		exit(1);
	for (size_t i = 0; i < m; i++)
		io_fault_image_apply(&st, io_fault_op(R->fl, d + i), keep[i]);
	kl = snprintf(label, sizeof(label), "after point %zu, ops [%zu,%zu) kept as", ctx[0],
		      d, d + m);
	for (size_t i = 0; i < m && kl < (int)sizeof(label) - 24; i++)
		kl += snprintf(label + kl, sizeof(label) - (size_t)kl,
			       keep[i] == UINT64_MAX ? " all" : " %llu",
			       (unsigned long long)keep[i]);
	if (check_image(R, &st, ctx[1], ctx[2], ctx[3], qemu, label) < 0 && R->verbose)
		dump_ops(R, d, d + m + 1);
	io_fault_image_free(&st);
	R->samples++;
}

static bool all_whole(const uint64_t *keep, size_t m)
{
	for (size_t i = 0; i < m; i++)
		if (keep[i] != UINT64_MAX)
			return false;
	return true;
}

unsigned long check_crash_states(struct run *R)
{
	size_t n = io_fault_nops(R->fl), npoints = 1, point = 0, d = 0;
	struct io_fault_image durable;
	char label[160];

	for (size_t i = 0; i < n; i++)
		npoints += io_fault_op(R->fl, i)->kind == IO_FAULT_FLUSH;
	if (io_fault_image_base(R->fl, &durable) < 0)
		exit(1);
	for (;;) {
		size_t j = d, m, ctx[4];
		uint64_t *keep, seen[64];
		unsigned got = 0, want = R->samples_per_interval;
		/* qemu-img at a few spread-out points, and on one state after each */
		bool q = R->qemu_budget && (point == npoints / 4 || point == npoints / 2 ||
					    point == npoints * 3 / 4 || point == npoints - 1);

		while (j < n && io_fault_op(R->fl, j)->kind != IO_FAULT_FLUSH)
			j++;
		m = j - d;
		/* A crash before op j completes comes after every flush that
		 * returned before op j was issued: those promises must hold,
		 * and any operation issued before op j may have landed. */
		ctx[0] = point;
		ctx[1] = level_before(R, j);
		ctx[2] = R->snaps[ctx[1]].ngops;
		ctx[3] = gops_before(R, j);

		snprintf(label, sizeof(label), "persistence point %zu (ops [0,%zu) durable)",
			 point, d);
		if (q)
			R->qemu_budget--;
		if (check_image(R, &durable, ctx[1], ctx[2], ctx[3], q, label) < 0 && R->verbose)
			dump_ops(R, d, j + 1);
		R->points++;

		keep = malloc((m ? m : 1) * sizeof(uint64_t));
		if (!keep)
			exit(1);
		if (want > 64)
			want = 64;
		/* After the last flush no next point covers the interval applied
		 * whole: check it here. Elsewhere that is the next point. */
		if (m && j == n) {
			for (size_t i = 0; i < m; i++)
				keep[i] = UINT64_MAX;
			seen[got++] = hash_keep(keep, m);
			check_sample(R, &durable, d, keep, m, ctx, false);
		}
		for (unsigned tries = 0; m && got < want && tries < want * 4; tries++) {
			uint64_t h;
			bool dup = false;

			random_keep(R, d, keep, m);
			h = hash_keep(keep, m);
			for (unsigned k = 0; k < got; k++)
				dup |= seen[k] == h;
			if (dup || all_whole(keep, m))
				continue;
			seen[got++] = h;
			bool qs = q && R->qemu_budget && got == 1;

			if (qs)
				R->qemu_budget--;
			check_sample(R, &durable, d, keep, m, ctx, qs);
			if (R->failures > 50)
				break;
		}
		free(keep);
		if (j >= n || R->failures > 50)
			break;
		/* the next point: everything through flush j is durable */
		for (size_t i = d; i <= j; i++)
			io_fault_image_apply(&durable, io_fault_op(R->fl, i), UINT64_MAX);
		d = j + 1;
		point++;
	}
	io_fault_image_free(&durable);
	return R->points + R->samples;
}
