// SPDX-License-Identifier: MIT
/* The io_uring backend: requests are batched into the submission ring,
 * reaped in batches, with an overflow FIFO when the ring is full. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

#define DEFAULT_DEPTH 128
#define MAX_DEPTH 4096

/* One transfer per SQE is capped like a read(2) (0x7ffff000); a power of
 * two keeps O_DIRECT remainders aligned. Longer requests continue as if
 * short. */
#define MAX_XFER ((size_t)1 << 30)

/*
 * Request states. A request is either
 *  - in the ring or the kernel: counted by inflight, r->res holds the bytes
 *    transferred so far (a short transfer resubmits the rest);
 *  - on the overflow FIFO, waiting for ring space (nwait);
 *  - complete, on the done list with its result in r->res, waiting for its
 *    callback at the next reap (ndone).
 * inflight never exceeds the CQ size, so the CQ can't overflow and every
 * request in flight has a CQE slot.
 */
#define NFIXED 16

struct uring_queue {
	struct io_queue q;
	struct io_uring ring;
	unsigned cq_entries;
	unsigned inflight;
	unsigned nwait;
	unsigned ndone;
	struct io_req *wait_head, **wait_tail;
	struct io_req *done_head, **done_tail;
	/* Registered files: the kernel skips the fd lookup per request. A
	 * slot remembers which io_file (by id) it holds; a new file takes the
	 * next slot round-robin, one update syscall the first time. */
	bool fixed_ok;
	uint64_t fixed_id[NFIXED];
	unsigned fixed_next;
};

/* Slot of f (whose kernel fd is fd) in the registered table, registering
 * it if needed; -1 when registration isn't available (the request then
 * uses the plain fd). */
static int fixed_slot(struct uring_queue *uq, const struct io_file *f, int fd)
{
	unsigned i;

	if (!uq->fixed_ok)
		return -1;
	for (i = 0; i < NFIXED; i++)
		if (uq->fixed_id[i] == f->id)
			return (int)i;
	i = uq->fixed_next;
	if (io_uring_register_files_update(&uq->ring, i, &fd, 1) != 1)
		return -1;
	uq->fixed_id[i] = f->id;
	uq->fixed_next = (i + 1) % NFIXED;
	return (int)i;
}

static struct uring_queue *to_uq(struct io_queue *q)
{
	return (struct uring_queue *)q;
}

static bool direct_misaligned(const struct io_file *f, const void *buf, size_t len,
			      uint64_t off)
{
	if (!(f->flags & IO_DIRECT) || f->align <= 1)
		return false;
	return (((uintptr_t)buf | off | len) & (f->align - 1)) != 0;
}

static void complete(struct uring_queue *uq, struct io_req *r, ssize_t res)
{
	r->res = res;
	r->next = NULL;
	*uq->done_tail = r;
	uq->done_tail = &r->next;
	uq->ndone++;
}

static void wait_push_back(struct uring_queue *uq, struct io_req *r)
{
	r->next = NULL;
	*uq->wait_tail = r;
	uq->wait_tail = &r->next;
	uq->nwait++;
}

/* A resubmission that finds no room goes first: it was queued before
 * anything now waiting (and before any flush barrier among them). */
static void wait_push_front(struct uring_queue *uq, struct io_req *r)
{
	r->next = uq->wait_head;
	uq->wait_head = r;
	if (!r->next)
		uq->wait_tail = &r->next;
	uq->nwait++;
}

/* Requests the kernel is not given: those on files without a kernel fd
 * (memory files, wrappers that must see each request, in queue order),
 * empty or out-of-range transfers, and O_DIRECT transfers that need a
 * bounce buffer. */
static bool runs_inline(const struct io_req *r)
{
	struct io_file *f = r->file;

	if (io_file_kernel_fd(f) < 0)
		return true;
	if (r->op == IO_FSYNC)
		return false;
	if (r->off > INT64_MAX || r->len > INT64_MAX - r->off)
		return true;   /* io_exec_sync reports -EINVAL */
	if (r->op == IO_PUNCH)
		return r->len == 0;
	return r->len == 0 || direct_misaligned(f, r->buf, r->len, r->off);
}

/* Put r (from where it got to) into an SQE. Only fills the SQ ring; the
 * kernel sees it at the next submit. Fails when the ring has no room. */
static bool prep(struct uring_queue *uq, struct io_req *r)
{
	struct io_uring_sqe *sqe;
	struct io_file *f = r->file;
	size_t done = (size_t)r->res;
	size_t n = r->len - done < MAX_XFER ? r->len - done : MAX_XFER;

	if (uq->inflight >= uq->cq_entries)
		return false;
	sqe = io_uring_get_sqe(&uq->ring);
	if (!sqe)
		return false;
	int kfd = io_file_kernel_fd(f), slot = fixed_slot(uq, f, kfd);
	int fd = slot >= 0 ? slot : kfd;

	switch (r->op) {
	case IO_READ:
		io_uring_prep_read(sqe, fd, (uint8_t *)r->buf + done, (unsigned)n,
				   r->off + done);
		break;
	case IO_WRITE:
		io_uring_prep_write(sqe, fd, (uint8_t *)r->buf + done, (unsigned)n,
				    r->off + done);
		break;
	case IO_FSYNC:
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		break;
	case IO_PUNCH:
		io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)r->off, (off_t)r->len);
		break;
	}
	if (slot >= 0)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, r);
	uq->inflight++;
	return true;
}

/* A flush covers everything queued before it, as it does with psync: it
 * waits on the FIFO until all earlier requests have completed (including
 * short ones being resubmitted, which IOSQE_IO_DRAIN would not cover).
 * Requests behind it wait too, so FIFO order stays queue order. */
static bool barrier(const struct uring_queue *uq, const struct io_req *r)
{
	return r->op == IO_FSYNC && uq->inflight > 0;
}

/* Move waiting requests into the SQ ring while it and the CQ have room. */
static void feed(struct uring_queue *uq)
{
	struct io_req *r;

	while ((r = uq->wait_head)) {
		if (barrier(uq, r) || !prep(uq, r))
			break;
		uq->wait_head = r->next;
		if (!uq->wait_head)
			uq->wait_tail = &uq->wait_head;
		uq->nwait--;
	}
}

static void uring_queue(struct io_queue *q, struct io_req *r)
{
	struct uring_queue *uq = to_uq(q);

	r->res = 0;
	r->next = NULL;
	if (runs_inline(r)) {
		complete(uq, r, io_exec_sync(r));
		return;
	}
	io_observe_kernel(r);
	/* Never ahead of requests already waiting: the FIFO keeps order. */
	if (uq->nwait || barrier(uq, r) || !prep(uq, r))
		wait_push_back(uq, r);
}

static void retry(struct uring_queue *uq, struct io_req *r)
{
	if (!prep(uq, r))
		wait_push_front(uq, r);
}

/* Finish a short transfer that can't go back to the kernel (an O_DIRECT
 * remainder that starts mid-block, at end of file) with a bounce buffer. */
static void finish_inline(struct uring_queue *uq, struct io_req *r)
{
	size_t done = (size_t)r->res;
	uint8_t *buf = (uint8_t *)r->buf + done;
	int ret;

	if (r->op == IO_READ)
		ret = io_pread_full(r->file, buf, r->len - done, r->off + done);
	else
		ret = io_pwrite_full(r->file, buf, r->len - done, r->off + done);
	complete(uq, r, ret < 0 ? ret : (ssize_t)r->len);
}

/* One CQE: complete r, or send it back for the rest of its transfer. */
static void handle(struct uring_queue *uq, struct io_req *r, int res)
{
	size_t done;

	uq->inflight--;
	if (res == -EAGAIN || res == -EINTR) {
		retry(uq, r);
		return;
	}
	switch (r->op) {
	case IO_READ:
	case IO_WRITE:
		if (res < 0)
			break;
		done = (size_t)r->res;
		if (res == 0) {
			if (r->op == IO_WRITE) {
				res = -EIO;
				break;
			}
			/* end of file: the rest reads as zeros */
			memset((uint8_t *)r->buf + done, 0, r->len - done);
			complete(uq, r, (ssize_t)r->len);
			return;
		}
		r->res = (ssize_t)(done + (size_t)res);
		done = (size_t)r->res;
		if (done == r->len) {
			complete(uq, r, (ssize_t)r->len);
			return;
		}
		if (direct_misaligned(r->file, NULL, 0, r->off + done))
			finish_inline(uq, r);
		else
			retry(uq, r);
		return;
	case IO_PUNCH:
		/* the file's punch writes zeros where holes can't be punched */
		if (res == -EOPNOTSUPP || res == -EINVAL || res == -ENOSYS) {
			complete(uq, r, io_exec_sync(r));
			return;
		}
		break;
	case IO_FSYNC:
		break;
	}
	complete(uq, r, res < 0 ? res : 0);
}

/* Take every CQE posted so far. */
static void harvest(struct uring_queue *uq)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen;

	/* With COOP_TASKRUN completions may wait as task work until we enter
	 * the kernel; the kernel flags that, and a poll must not miss them. */
	if (IO_URING_READ_ONCE(*uq->ring.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW))
		io_uring_get_events(&uq->ring);
	do {
		seen = 0;
		io_uring_for_each_cqe(&uq->ring, head, cqe) {
			handle(uq, io_uring_cqe_get_data(cqe), cqe->res);
			seen++;
		}
		/* One store to the CQ head per batch, not one per CQE. */
		io_uring_cq_advance(&uq->ring, seen);
	} while (seen);
}

/* Run the callbacks of everything completed so far. Requests they queue
 * land on a fresh list and wait for the next round. */
static unsigned deliver(struct uring_queue *uq)
{
	struct io_req *r = uq->done_head, *next;
	unsigned n = 0;

	uq->done_head = NULL;
	uq->done_tail = &uq->done_head;
	for (; r; r = next) {
		next = r->next;   /* done() may requeue or free r */
		uq->ndone--;
		n++;
		if (r->done)
			r->done(r, r->res);
	}
	return n;
}

static unsigned uring_pending(struct io_queue *q)
{
	struct uring_queue *uq = to_uq(q);

	return uq->inflight + uq->nwait + uq->ndone;
}

/* Hand the SQ ring to the kernel, refilling it from the FIFO as long as
 * the CQ has room: one syscall per ring-full, not per request. */
static int uring_submit(struct io_queue *q)
{
	struct uring_queue *uq = to_uq(q);
	int ret;

	for (;;) {
		feed(uq);
		if (!io_uring_sq_ready(&uq->ring))
			return 0;
		ret = io_uring_submit(&uq->ring);
		if (ret == -EINTR)
			continue;
		if (ret < 0)
			return ret;
		if (!uq->wait_head || uq->inflight >= uq->cq_entries)
			return 0;
		if (io_uring_sq_ready(&uq->ring))
			return 0;   /* the kernel took only part: don't spin */
	}
}

static int uring_reap(struct io_queue *q, unsigned min)
{
	struct uring_queue *uq = to_uq(q);
	struct io_uring_cqe *cqe;
	unsigned n = 0, want;
	int ret;

	for (;;) {
		ret = uring_submit(q);
		/* -EAGAIN/-EBUSY: the kernel is short of resources for new
		 * SQEs; it takes them again once something completes. */
		if (ret < 0 && ret != -EAGAIN && ret != -EBUSY)
			return n ? (int)n : ret;
		harvest(uq);
		n += deliver(uq);
		if (n >= min)
			break;
		if (uq->done_head)
			continue;   /* callbacks completed more inline */
		/* Look at the lists, not pending(): from a reap nested in a
		 * callback, the outer batch still counts but can't be waited on. */
		if (!uq->inflight && !uq->nwait)
			break;
		feed(uq);
		/* Wait for as many CQEs as we still need, in one syscall that
		 * also submits: each request in flight posts exactly one, so
		 * waiting for up to inflight of them always ends. */
		want = min - n < uq->inflight ? min - n : uq->inflight;
		if (!want)
			break;   /* can't happen: feed fills an empty ring */
		ret = io_uring_submit_and_wait(&uq->ring, want);
		if (ret == -EAGAIN || ret == -EBUSY) {
			if (uq->inflight == io_uring_sq_ready(&uq->ring))
				return n ? (int)n : ret;   /* nothing to wait for */
			ret = io_uring_wait_cqe_nr(&uq->ring, &cqe, 1);
		}
		if (ret < 0 && ret != -EINTR && ret != -ETIME)
			return n ? (int)n : ret;
	}
	ret = uring_submit(q);   /* callbacks may have queued more */
	if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && !n)
		return ret;
	return (int)n;
}

/* Fail early on kernels that have io_uring but not the opcodes we use, so
 * io_queue_create falls back to psync instead of failing each request. */
static int probe(struct io_uring *ring)
{
	static const int ops[] = { IORING_OP_READ, IORING_OP_WRITE, IORING_OP_FSYNC,
				   IORING_OP_FALLOCATE };
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	int ret = 0;

	if (!p)
		return -ENOSYS;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!io_uring_opcode_supported(p, ops[i]))
			ret = -ENOSYS;
	io_uring_free_probe(p);
	return ret;
}

static int uring_init(struct io_queue **out, unsigned depth)
{
	struct io_uring_params p;
	struct uring_queue *uq;
	int ret;

	*out = NULL;
	if (!depth)
		depth = DEFAULT_DEPTH;
	if (depth > MAX_DEPTH)
		depth = MAX_DEPTH;
	uq = calloc(1, sizeof(*uq));
	if (!uq)
		return -ENOMEM;
	/*
	 * COOP_TASKRUN: completions are posted when we next enter the kernel
	 * rather than by interrupting the thread; TASKRUN_FLAG tells a poll
	 * that some are waiting. Not SINGLE_ISSUER: a queue may be created on
	 * one thread (uq_open) and driven from another, which it would refuse.
	 * Kernels older than 5.19 reject the flags with EINVAL: retry bare.
	 */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CLAMP | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	ret = io_uring_queue_init_params(depth, &uq->ring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CLAMP;
		ret = io_uring_queue_init_params(depth, &uq->ring, &p);
	}
	if (ret < 0) {
		free(uq);
		return ret;
	}
	ret = probe(&uq->ring);
	if (ret < 0) {
		io_uring_queue_exit(&uq->ring);
		free(uq);
		return ret;
	}
	/* a sparse table; where registration is refused, plain fds do */
	int fds[NFIXED];

	for (unsigned i = 0; i < NFIXED; i++)
		fds[i] = -1;
	uq->fixed_ok = io_uring_register_files(&uq->ring, fds, NFIXED) == 0;
	uq->q.be = &io_uring_backend;
	uq->cq_entries = p.cq_entries;
	uq->wait_tail = &uq->wait_head;
	uq->done_tail = &uq->done_head;
	*out = &uq->q;
	return 0;
}

/* Callers drain first (reap until nothing is pending): the kernel cancels
 * what is still in flight, but its buffers belong to the caller. */
static void uring_free(struct io_queue *q)
{
	struct uring_queue *uq = to_uq(q);

	io_uring_queue_exit(&uq->ring);
	free(uq);
}

const struct io_backend io_uring_backend = {
	.name = "io_uring",
	.queue_init = uring_init,
	.queue_free = uring_free,
	.queue = uring_queue,
	.submit = uring_submit,
	.reap = uring_reap,
	.pending = uring_pending,
};
