// SPDX-License-Identifier: MIT
/* I/O backends: batched writes and reads (past the ring depth), zero-fill,
 * punch, truncate, ENOSPC, chained callbacks and O_DIRECT, on every backend;
 * wrapper files (one that forwards everything, the fault wrapper) over them. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "internal.h"
#include "io.h"
#include "test.h"
#include "uqcow.h"

#define FSIZE (3u << 20)          /* bytes written per file */
#define RSIZE (FSIZE + 200000u)   /* bytes read back: reaches past EOF */
#define DEPTH 8                   /* small ring: every batch overflows it */
#define MAXSEG 4096

/* Files the backend tests run on: an fd file, a memory file, an fd file
 * under a wrapper that forwards everything (kernel fd included), and one
 * under the fault wrapper (no kernel fd: everything runs through it). */
enum kind { KIND_FD, KIND_MEM, KIND_FWD, KIND_FAULT, NKINDS };
static const char *kind_name[] = { "fd", "mem", "fwd-fd", "fault-fd" };

static uint64_t rng = 0x9e3779b97f4a7c15ull;

#define RUN(call)                                                          \
	do {                                                               \
		if ((call) < 0)                                            \
			return -1;                                         \
	} while (0)

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(rnd() >> 24);
}

/* Completion bookkeeping shared by the simple callbacks. */
static unsigned completed, bad;

static void count_done(struct io_req *r, ssize_t res)
{
	ssize_t want = r->op == IO_READ || r->op == IO_WRITE ? (ssize_t)r->len : 0;

	if (r->priv)
		want = *(ssize_t *)r->priv;
	if (res != want) {
		fprintf(stderr, "[%s] op %d off %llu len %zu: res %zd, want %zd\n", test_where,
			r->op, (unsigned long long)r->off, r->len, res, want);
		bad++;
	}
	completed++;
}

/* Reap until nothing is pending; every reap must make progress. */
static int drain(struct io_queue *q)
{
	while (io_pending(q)) {
		int n = io_reap(q, 1);

		CHECK(n >= 1);
	}
	/* nothing pending: these return at once */
	CHECK(io_reap(q, 0) == 0);
	CHECK(io_reap(q, 5) == 0);
	return 0;
}

static void set_req(struct io_req *r, enum io_op op, struct io_file *f, void *buf,
		    size_t len, uint64_t off)
{
	memset(r, 0, sizeof(*r));
	r->op = op;
	r->file = f;
	r->buf = buf;
	r->len = len;
	r->off = off;
	r->done = count_done;
}

struct seg {
	uint64_t off;
	size_t len;
};

/* Cut [0, total) into pieces of random size (1 byte .. 48 KiB), shuffled. */
static unsigned cut(struct seg *s, size_t total)
{
	unsigned n = 0;
	uint64_t pos = 0;

	while (pos < total && n < MAXSEG) {
		size_t len = rnd() % 8 == 0 ? 1 + rnd() % 64 : 1 + rnd() % 49152;

		if (len > total - pos)
			len = total - pos;
		s[n].off = pos;
		s[n].len = len;
		pos += len;
		n++;
	}
	for (unsigned i = n - 1; i > 0; i--) {
		unsigned j = (unsigned)(rnd() % (i + 1));
		struct seg t = s[i];

		s[i] = s[j];
		s[j] = t;
	}
	return n;
}

/* A wrapper that changes nothing: every entry forwards to the inner file. */
static const struct io_file_ops fwd_ops = {
	.read = io_fwd_read,
	.write = io_fwd_write,
	.punch = io_fwd_punch,
	.fsync = io_fwd_fsync,
	.truncate = io_fwd_truncate,
	.preallocate = io_fwd_preallocate,
	.size = io_fwd_size,
	.allocated = io_fwd_allocated,
	.seek = io_fwd_seek,
	.identity = io_fwd_identity,
	.kernel_fd = io_fwd_kernel_fd,
	.close = io_fwd_close,
};

static int wrap_fwd(struct io_file *inner, struct io_file **out)
{
	struct io_file *w = malloc(sizeof(*w));

	*out = NULL;
	if (!w)
		return -ENOMEM;
	io_wrap_init(w, &fwd_ops, inner);
	*out = w;
	return 0;
}

static int open_tmp(char *path, unsigned flags, struct io_file **f)
{
	int fd, ret;

	strcpy(path, "/tmp/uqcow-test-io-XXXXXX");
	fd = mkstemp(path);
	CHECK(fd >= 0);
	close(fd);
	ret = io_file_open(path, flags, f);
	unlink(path);   /* the open fd keeps it; nothing is left behind */
	return ret;
}

/* The fault record of the KIND_FAULT file under test. */
static struct io_fault *cur_fl;

static int open_kind(enum kind k, char *path, struct io_file **f)
{
	struct io_file *inner;

	if (k == KIND_MEM)
		return io_file_open_mem(NULL, 0, IO_RDWR, f);
	CHECK(open_tmp(path, IO_RDWR | IO_CREATE, k == KIND_FD ? f : &inner) == 0);
	if (k == KIND_FWD)
		CHECK(wrap_fwd(inner, f) == 0);
	if (k == KIND_FAULT)
		CHECK(io_fault_wrap(inner, &cur_fl, f) == 0);
	return 0;
}

static struct seg segs[MAXSEG];
static struct io_req reqs[MAXSEG];
static unsigned last_writes;   /* writes rw_batch queued */

/* Write ref with many queued writes (some pieces left as holes), then read
 * everything back, past EOF, in one batch. ref holds what the file should
 * hold; out gets what was read. */
static int rw_batch(struct io_queue *q, struct io_file *f, uint8_t *ref, uint8_t *out)
{
	unsigned n = cut(segs, FSIZE), nw = 0;
	uint64_t end = 0, size;

	fill_random(ref, FSIZE);
	memset(ref + FSIZE, 0, RSIZE - FSIZE);
	completed = bad = 0;
	for (unsigned i = 0; i < n; i++) {
		if (rnd() % 8 == 0 && segs[i].off + segs[i].len < FSIZE) {
			memset(ref + segs[i].off, 0, segs[i].len);   /* a hole */
			continue;
		}
		set_req(&reqs[nw], IO_WRITE, f, ref + segs[i].off, segs[i].len, segs[i].off);
		io_queue_req(q, &reqs[nw++]);
		if (segs[i].off + segs[i].len > end)
			end = segs[i].off + segs[i].len;
	}
	last_writes = nw;
	CHECK(io_pending(q) == nw);
	CHECK(io_submit(q) == 0);
	RUN(drain(q));
	CHECK(completed == nw && bad == 0);
	CHECK(io_file_size(f, &size) == 0 && size == end && end == FSIZE);

	n = cut(segs, RSIZE);
	CHECK(n > DEPTH * 4);
	memset(out, 0xa5, RSIZE);
	completed = bad = 0;
	for (unsigned i = 0; i < n; i++) {
		set_req(&reqs[i], IO_READ, f, out + segs[i].off, segs[i].len, segs[i].off);
		io_queue_req(q, &reqs[i]);
	}
	RUN(drain(q));
	CHECK(completed == n && bad == 0);
	CHECK(memcmp(out, ref, RSIZE) == 0);
	return 0;
}

static int punch_and_truncate(struct io_queue *q, struct io_file *f, uint8_t *ref, uint8_t *out)
{
	static const struct seg holes[] = {
		{ 100000, 300000 },        /* misaligned both ends */
		{ 4096 * 300, 4096 * 5 },  /* whole blocks */
		{ FSIZE - 1000, 5000 },    /* across EOF: the size stays */
	};
	struct io_req r[3];
	uint64_t size, alloc;

	completed = bad = 0;
	for (unsigned i = 0; i < 3; i++) {
		set_req(&r[i], IO_PUNCH, f, NULL, holes[i].len, holes[i].off);
		io_queue_req(q, &r[i]);
		memset(ref + holes[i].off, 0, holes[i].off + holes[i].len <= FSIZE ?
		       holes[i].len : FSIZE - holes[i].off);
	}
	RUN(drain(q));
	CHECK(completed == 3 && bad == 0);
	CHECK(io_file_size(f, &size) == 0 && size == FSIZE);
	CHECK(io_pread_full(f, out, RSIZE, 0) == 0);
	CHECK(memcmp(out, ref, RSIZE) == 0);

	/* shrink, then grow: the regrown part reads as zeros */
	CHECK(io_file_truncate(f, 500000) == 0);
	CHECK(io_file_size(f, &size) == 0 && size == 500000);
	CHECK(io_file_truncate(f, 700000) == 0);
	CHECK(io_file_size(f, &size) == 0 && size == 700000);
	memset(ref + 500000, 0, FSIZE - 500000);
	completed = bad = 0;
	set_req(&r[0], IO_READ, f, out, 400000, 400000);   /* 100000 past EOF */
	io_queue_req(q, &r[0]);
	RUN(drain(q));
	CHECK(completed == 1 && bad == 0);
	CHECK(memcmp(out, ref + 400000, 400000) == 0);
	CHECK(io_file_allocated(f, &alloc) == 0);
	CHECK(alloc <= 700000 + 65536);

	/* a flush through the queue, and the synchronous one */
	set_req(&r[0], IO_FSYNC, f, NULL, 0, 0);
	set_req(&r[1], IO_WRITE, f, ref, 4096, 0);
	completed = bad = 0;
	io_queue_req(q, &r[1]);
	io_queue_req(q, &r[0]);
	RUN(drain(q));
	CHECK(completed == 2 && bad == 0);
	CHECK(io_fsync(f) == 0);
	return 0;
}

/* Callbacks that queue more: each write, when done, queues two more until
 * LIMIT have been issued, then each re-queues itself once as a read. */
#define LIMIT 300
#define PIECE 512

static struct chain {
	struct io_queue *q;
	struct io_file *f;
	unsigned issued, writes, reads;
	int err;
	uint8_t data[LIMIT][PIECE];
	uint8_t back[LIMIT][PIECE];
	struct io_req r[LIMIT];
} ch;

static void chain_done(struct io_req *r, ssize_t res);

static void chain_issue(void)
{
	unsigned i = ch.issued++;

	memset(ch.data[i], (int)(i * 7 + 1), PIECE);
	set_req(&ch.r[i], IO_WRITE, ch.f, ch.data[i], PIECE, (uint64_t)i * PIECE);
	ch.r[i].done = chain_done;
	io_queue_req(ch.q, &ch.r[i]);
}

static void chain_done(struct io_req *r, ssize_t res)
{
	unsigned i = (unsigned)(r - ch.r);

	if (res != PIECE)
		ch.err = 1;
	if (r->op == IO_READ) {
		ch.reads++;
		return;
	}
	ch.writes++;
	for (int k = 0; k < 2 && ch.issued < LIMIT; k++)
		chain_issue();
	/* reuse the very request that just completed */
	set_req(r, IO_READ, ch.f, ch.back[i], PIECE, (uint64_t)i * PIECE);
	r->done = chain_done;
	io_queue_req(ch.q, r);
}

static int chained(struct io_queue *q, struct io_file *f)
{
	int n;

	memset(&ch, 0, sizeof(ch));
	ch.q = q;
	ch.f = f;
	chain_issue();
	chain_issue();
	/* one call runs the whole cascade: min is more than will ever exist */
	n = io_reap(q, UINT_MAX);
	CHECK(n == 2 * LIMIT);
	CHECK(io_pending(q) == 0);
	CHECK(ch.err == 0 && ch.writes == LIMIT && ch.reads == LIMIT);
	CHECK(memcmp(ch.data, ch.back, sizeof(ch.data)) == 0);
	return 0;
}

/* A callback that reaps from inside done(), as a caller waiting on an L2
 * fill does: it must neither hang nor lose completions. */
static struct io_queue *nest_q;
static int nest_depth, nest_ret;

static void nest_done(struct io_req *r, ssize_t res)
{
	count_done(r, res);
	if (nest_depth == 0) {   /* one level: every outer callback reaps */
		int n;

		nest_depth++;
		n = io_reap(nest_q, 1);
		nest_depth--;
		if (n < 0)
			nest_ret = n;
	}
}

static int nested(struct io_queue *q, struct io_file *f, uint8_t *out)
{
	struct io_req r[40];

	nest_q = q;
	nest_depth = nest_ret = 0;
	completed = bad = 0;
	for (unsigned i = 0; i < 40; i++) {
		set_req(&r[i], IO_READ, f, out + i * 4096, 4096, i * 4096);
		r[i].done = nest_done;
		io_queue_req(q, &r[i]);
	}
	RUN(drain(q));
	CHECK(completed == 40 && bad == 0 && nest_ret == 0);
	return 0;
}

static int enospc(struct io_queue *q)
{
	static uint8_t buf[70000];
	struct io_file *f;
	struct io_req r[2];
	ssize_t want_nospc = -ENOSPC;
	uint64_t size;

	CHECK(io_file_open_mem("abc", 3, IO_RDWR, &f) == 0);
	CHECK(io_mem_set_limit(f, 65536) == 0);
	fill_random(buf, sizeof(buf));
	completed = bad = 0;
	set_req(&r[0], IO_WRITE, f, buf, 65536 - 60000, 60000);   /* ends at the limit */
	set_req(&r[1], IO_WRITE, f, buf, 1000, 65000);            /* crosses it */
	r[1].priv = &want_nospc;
	io_queue_req(q, &r[0]);
	io_queue_req(q, &r[1]);
	RUN(drain(q));
	CHECK(completed == 2 && bad == 0);
	CHECK(io_pwrite_full(f, buf, 2, 65535) == -ENOSPC);
	CHECK(io_file_truncate(f, 65537) == -ENOSPC);
	CHECK(io_file_size(f, &size) == 0 && size == 65536);
	CHECK(io_pread_full(f, buf + 65536, 4, 0) == 0 && memcmp(buf + 65536, "abc", 4) == 0);
	io_file_close(f);

	/* read-only memory files refuse writes like a read-only fd */
	CHECK(io_file_open_mem("abc", 3, 0, &f) == 0);
	CHECK(io_pwrite_full(f, buf, 1, 0) == -EBADF);
	io_file_close(f);
	return 0;
}

/* O_DIRECT: aligned and misaligned reads through the queue, a misaligned
 * read-modify-write, and an unaligned end of file. */
static int direct(struct io_queue *q)
{
	enum { SZ = 1 << 20 };
	char path[64];
	struct io_file *f;
	struct io_req r[4];
	uint8_t *abuf, *ref, *back;
	uint64_t size;
	int fd, ret;

	strcpy(path, "/tmp/uqcow-test-io-XXXXXX");
	fd = mkstemp(path);
	CHECK(fd >= 0);
	close(fd);
	ret = io_file_open(path, IO_RDWR | IO_CREATE | IO_DIRECT, &f);
	unlink(path);
	if (ret == -EINVAL) {
		printf("[%s] O_DIRECT refused by the file system: skipped\n", test_where);
		return 0;
	}
	CHECK(ret == 0);
	CHECK(f->align >= 512 && (f->align & (f->align - 1)) == 0);
	CHECK(posix_memalign((void **)&abuf, 4096, SZ + 8192) == 0);
	ref = malloc(SZ + 8192);
	back = malloc(SZ + 8192);
	CHECK(ref && back);
	fill_random(ref, SZ);
	memset(ref + SZ, 0, 8192);
	memcpy(abuf, ref, SZ);

	completed = bad = 0;
	for (unsigned i = 0; i < 4; i++) {   /* aligned writes */
		set_req(&r[i], IO_WRITE, f, abuf + i * (SZ / 4), SZ / 4, i * (SZ / 4));
		io_queue_req(q, &r[i]);
	}
	RUN(drain(q));
	CHECK(completed == 4 && bad == 0);

	memset(abuf, 0, SZ);
	set_req(&r[0], IO_READ, f, abuf, SZ / 2, SZ / 2);           /* aligned */
	set_req(&r[1], IO_READ, f, abuf + SZ / 2 + 1, 5000, 1003);  /* misaligned */
	completed = bad = 0;
	io_queue_req(q, &r[0]);
	io_queue_req(q, &r[1]);
	RUN(drain(q));
	CHECK(completed == 2 && bad == 0);
	CHECK(memcmp(abuf, ref + SZ / 2, SZ / 2) == 0);
	CHECK(memcmp(abuf + SZ / 2 + 1, ref + 1003, 5000) == 0);

	/* misaligned write: read-modify-write keeps the neighbours */
	fill_random(ref + 777, 3000);
	CHECK(io_pwrite_full(f, ref + 777, 3000, 777) == 0);
	CHECK(io_pread_full(f, back + 3, 20000, 0) == 0);   /* misaligned buffer */
	CHECK(memcmp(back + 3, ref, 20000) == 0);

	/* unaligned end of file: a bounced write must not grow the file */
	fill_random(ref + SZ, 1000);
	CHECK(io_pwrite_full(f, ref + SZ, 1000, SZ) == 0);
	CHECK(io_file_size(f, &size) == 0 && size == SZ + 1000);
	memset(abuf, 0xa5, 8192);
	memset(back, 0xa5, 8192);
	set_req(&r[0], IO_READ, f, abuf, 8192, SZ);             /* aligned, over EOF */
	set_req(&r[1], IO_READ, f, back + 1, 5000, SZ + 500);   /* misaligned, over EOF */
	completed = bad = 0;
	io_queue_req(q, &r[0]);
	io_queue_req(q, &r[1]);
	RUN(drain(q));
	CHECK(completed == 2 && bad == 0);
	CHECK(memcmp(abuf, ref + SZ, 8192) == 0);
	CHECK(memcmp(back + 1, ref + SZ + 500, 5000) == 0);
	CHECK(io_pread_full(f, back, SZ + 5000, 0) == 0);
	CHECK(memcmp(back, ref, SZ + 5000) == 0);

	io_file_close(f);
	free(abuf);
	free(ref);
	free(back);
	return 0;
}

/* Under the fault wrapper, each of rw_batch's writes ran through it (under
 * io_uring too: the wrapper has no kernel fd, so the queue ran them inline)
 * and is in the record. */
static int fault_saw_batch(void)
{
	CHECK(io_fault_changes(cur_fl) == last_writes);
	CHECK(io_fault_nops(cur_fl) == last_writes && io_fault_failures(cur_fl) == 0);
	for (size_t i = 0; i < last_writes; i++)
		CHECK(io_fault_op(cur_fl, i)->kind == IO_FAULT_WRITE);
	return 0;
}

/* An injected failure reaches the request through the queue; the next
 * change works again (not sticky). Then the record, replayed on the file
 * as it was at the wrap, gives the file as it is. */
static int fault_through_queue(struct io_queue *q, struct io_file *f)
{
	static uint8_t buf[8192];
	struct io_fault_image st;
	size_t nops = io_fault_nops(cur_fl);
	ssize_t want_nospc = -ENOSPC;
	struct io_req r[2];
	uint8_t *back;
	uint64_t size;

	fill_random(buf, sizeof(buf));
	io_fault_fail_at(cur_fl, io_fault_changes(cur_fl) + 1, -ENOSPC, false);
	set_req(&r[0], IO_WRITE, f, buf, 4096, 0);
	r[0].priv = &want_nospc;
	set_req(&r[1], IO_WRITE, f, buf + 4096, 4096, 4096);
	completed = bad = 0;
	io_queue_req(q, &r[0]);
	io_queue_req(q, &r[1]);
	RUN(drain(q));
	CHECK(completed == 2 && bad == 0);
	CHECK(io_fault_failures(cur_fl) == 1 && io_fault_nops(cur_fl) == nops + 1);
	CHECK(io_fault_first_failure(cur_fl)->kind == IO_FAULT_WRITE &&
	      io_fault_first_failure(cur_fl)->off == 0);
	io_fault_fail_at(cur_fl, 0, 0, false);

	CHECK(io_fault_crash_state(cur_fl, io_fault_nops(cur_fl), NULL, 0, &st) == 0);
	CHECK(io_file_size(f, &size) == 0 && size == st.len);
	back = malloc(size ? size : 1);
	CHECK(back && io_pread_full(f, back, size, 0) == 0);
	CHECK(memcmp(back, st.data, size) == 0);
	CHECK(memcmp(back + 4096, buf + 4096, 4096) == 0);
	free(back);
	io_fault_image_free(&st);
	return 0;
}

/* Bytes read back by the first backend, per file kind, for comparison.
 * Wrapped fd files must read back what the plain one did. */
static uint8_t *first_out[2];

static int run_backend(const char *be)
{
	static char label[64];
	struct io_queue *q;
	uint8_t *ref = malloc(RSIZE), *out = malloc(RSIZE);
	int ret = 0;

	CHECK(ref && out);
	CHECK(io_queue_create(be, DEPTH, &q) == 0);
	CHECK(strcmp(io_backend_name(q), be) == 0);
	for (int k = KIND_FD; k < NKINDS && ret == 0; k++) {
		int same = k == KIND_MEM ? KIND_MEM : KIND_FD;
		char path[64];
		struct io_file *f;

		snprintf(label, sizeof(label), "%s/%s", be, kind_name[k]);
		test_where = label;
		rng = 0x9e3779b97f4a7c15ull;   /* same data on every backend */
		ret = open_kind(k, path, &f);
		if (ret < 0)
			break;
		ret = rw_batch(q, f, ref, out);
		if (ret == 0) {
			if (!first_out[same]) {
				first_out[same] = out;
				out = malloc(RSIZE);
				if (!out)
					ret = -1;
			} else if (memcmp(first_out[same], out, RSIZE) != 0) {
				fprintf(stderr, "[%s] differs from the first backend's %s\n",
					test_where, kind_name[same]);
				ret = -1;
			}
		}
		if (ret == 0 && k == KIND_FAULT)
			ret = fault_saw_batch();
		if (ret == 0)
			ret = punch_and_truncate(q, f, ref, out);
		if (ret == 0)
			ret = chained(q, f);
		if (ret == 0)
			ret = nested(q, f, out);
		if (ret == 0 && k == KIND_FAULT)
			ret = fault_through_queue(q, f);
		io_file_close(f);
		if (k == KIND_FAULT) {
			/* the record outlives the file */
			if (ret == 0 && io_fault_nops(cur_fl) <= last_writes)
				ret = -1;
			io_fault_free(cur_fl);
			cur_fl = NULL;
		}
	}
	if (ret == 0) {
		snprintf(label, sizeof(label), "%s/mem", be);
		ret = enospc(q);
	}
	if (ret == 0) {
		snprintf(label, sizeof(label), "%s/direct", be);
		ret = direct(q);
	}
	io_queue_free(q);
	free(ref);
	free(out);
	if (ret == 0)
		printf("%s: ok\n", be);
	return ret;
}

/* Each entry of the table, through a forwarding wrapper and on its inner
 * file directly, gives the same answer; changes made through the wrapper
 * land in the inner file; closing the wrapper closes the inner file. */
static int forwarding_on(struct io_file *in)
{
	static uint8_t buf[65536], back[65536];
	uint64_t a, b, c, d;
	struct io_file *w;
	int kfd, ra, rb;

	CHECK(wrap_fwd(in, &w) == 0);
	CHECK(w->inner == in && w->id != in->id);
	CHECK(w->flags == in->flags && w->align == in->align);

	fill_random(buf, sizeof(buf));
	CHECK(io_pwrite_full(w, buf, sizeof(buf), 0) == 0);
	CHECK(io_file_truncate(w, 1 << 20) == 0);
	CHECK(io_punch(w, 4096, 8192) == 0);
	memset(buf + 4096, 0, 8192);
	CHECK(io_fsync(w) == 0);
	CHECK(io_pread_full(in, back, sizeof(back), 0) == 0);
	CHECK(memcmp(back, buf, sizeof(buf)) == 0);
	memset(back, 0xa5, sizeof(back));
	CHECK(io_pread_full(w, back, sizeof(back), 0) == 0);
	CHECK(memcmp(back, buf, sizeof(buf)) == 0);

	CHECK(io_file_size(w, &a) == 0 && io_file_size(in, &b) == 0 && a == b && a == 1 << 20);
	CHECK(io_file_allocated(w, &a) == 0 && io_file_allocated(in, &b) == 0 && a == b);
	for (uint64_t off = 0; off <= (1 << 20); off += 65536) {
		ra = io_file_seek_data(w, off, &a);
		rb = io_file_seek_data(in, off, &b);
		CHECK(ra == rb && (ra < 0 || a == b));
		ra = io_file_seek_hole(w, off, &a);
		rb = io_file_seek_hole(in, off, &b);
		CHECK(ra == rb && (ra < 0 || a == b));
	}
	CHECK(io_file_seek_data(w, 0, &a) == 0 && a == 0);
	CHECK(io_file_seek_data(w, 1 << 20, &a) == -ENXIO);
	ra = io_file_identity(w, &a, &b);
	rb = io_file_identity(in, &c, &d);
	CHECK(ra == rb && (ra < 0 || (a == c && b == d)));
	kfd = io_file_kernel_fd(w);
	CHECK(kfd == io_file_kernel_fd(in));
	CHECK(io_file_preallocate(w, 1 << 20, 65536) == 0);
	CHECK(io_file_size(in, &a) == 0 && a == (1 << 20) + 65536);

	io_file_close(w);
	if (kfd >= 0)
		CHECK(fcntl(kfd, F_GETFD) == -1 && errno == EBADF);
	return 0;
}

static int forwarding(void)
{
	char path[64];
	struct io_file *in;
	uint64_t dev, ino;

	test_where = "forwarding/fd";
	CHECK(open_tmp(path, IO_RDWR | IO_CREATE, &in) == 0);
	CHECK(io_file_kernel_fd(in) >= 0 && io_file_identity(in, &dev, &ino) == 0);
	RUN(forwarding_on(in));
	test_where = "forwarding/mem";
	CHECK(io_file_open_mem(NULL, 0, IO_RDWR, &in) == 0);
	CHECK(io_file_kernel_fd(in) == -1 && io_file_identity(in, &dev, &ino) == -ENOTSUP);
	RUN(forwarding_on(in));
	printf("forwarding wrapper: ok\n");
	return 0;
}

/* preallocation=falloc on an open image under the fault wrapper: the
 * wrapper sees the truncate that grows the file and the preallocation of
 * the data clusters, and its record replays to the file on disk. */
static int fault_prealloc(void)
{
	enum { CS = 65536 };
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = 16 * CS,
				     .cluster_size = CS };
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR,
				  .backend = UQ_IO_PSYNC };
	const struct io_fault_op *tr = NULL, *pa = NULL;
	struct io_fault_image st;
	struct io_file *disk;
	struct io_fault *fl;
	char path[64];
	uq_image *img;
	uint64_t size, alloc;
	uint8_t *back;
	int fd;

	test_where = "fault/prealloc";
	strcpy(path, "/tmp/uqcow-test-io-XXXXXX");
	fd = mkstemp(path);
	CHECK(fd >= 0);
	close(fd);
	CHECK(uq_create(path, &co) == 0);
	CHECK(uq_open(path, &o, &img) == 0);
	CHECK(uq_image_wrap_file(img, io_fault_wrap_fn, &fl) == 0);
	CHECK(img->data == img->file && img->file->inner);
	CHECK(uq_preallocate(img, UQ_PREALLOC_FALLOC) == 0);
	for (size_t i = 0; i < io_fault_nops(fl); i++) {
		const struct io_fault_op *op = io_fault_op(fl, i);

		if (op->kind == IO_FAULT_TRUNCATE && !pa)
			tr = op;
		if (op->kind == IO_FAULT_PREALLOC) {
			CHECK(!pa);   /* one */
			pa = op;
		}
	}
	CHECK(tr && pa);
	CHECK(pa->len > 0 && pa->off % CS == 0 && pa->off + pa->len == tr->len);
	CHECK(pa->len >= 16 * CS);   /* every data cluster */
	CHECK(io_file_size(img->file, &size) == 0 && size == tr->len);
	CHECK(io_file_allocated(img->file, &alloc) == 0 && alloc >= pa->len);
	CHECK(uq_close(img) == 0);

	CHECK(io_fault_crash_state(fl, io_fault_nops(fl), NULL, 0, &st) == 0);
	CHECK(io_file_open(path, 0, &disk) == 0);
	CHECK(io_file_size(disk, &size) == 0 && size == st.len);
	back = malloc(size);
	CHECK(back && io_pread_full(disk, back, size, 0) == 0);
	CHECK(memcmp(back, st.data, size) == 0);
	free(back);
	io_file_close(disk);
	io_fault_image_free(&st);
	io_fault_free(fl);
	unlink(path);
	printf("fault wrapper under preallocation=falloc: ok\n");
	return 0;
}

static int selection(void)
{
	const char *env = getenv("UQCOW_IO");
	struct io_queue *q;
	struct io_file *f;
	int ret;

	test_where = "selection";
	CHECK(io_queue_create("nonsense", DEPTH, &q) == -EINVAL);
	CHECK(io_queue_create(NULL, DEPTH, &q) == 0);
	if (env && *env && strcmp(env, "auto") != 0)
		CHECK(strcmp(io_backend_name(q), env) == 0);
	printf("default backend: %s\n", io_backend_name(q));
	io_queue_free(q);

	ret = io_file_open("/tmp/uqcow-test-io-missing/none", 0, &f);
	CHECK(ret == -ENOENT);
	CHECK(strstr(uq_errmsg(), "/tmp/uqcow-test-io-missing/none") != NULL);
	return 0;
}

int main(void)
{
	struct io_queue *q;
	int ret;

	alarm(300);   /* a hang is a failure, not a stuck test run */
	if (selection() < 0)
		return 1;
	ret = io_queue_create("io_uring", DEPTH, &q);
	if (ret == 0) {
		io_queue_free(q);
		if (run_backend("io_uring") < 0)
			return 1;
	} else {
		printf("io_uring unavailable (%s): psync only\n", strerror(-ret));
	}
	if (run_backend("psync") < 0)
		return 1;
	if (forwarding() < 0 || fault_prealloc() < 0)
		return 1;
	free(first_out[0]);
	free(first_out[1]);
	return 0;
}
