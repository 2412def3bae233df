// SPDX-License-Identifier: MIT
/* The pread/pwrite backend: requests execute when queued and complete at the
 * next reap. Used where io_uring is unavailable (seccomp, old kernels). */
#include <errno.h>
#include <stdlib.h>

#include "io.h"

struct psync_queue {
	struct io_queue q;
	/* executed, waiting for their callback, in queue order */
	struct io_req *head, **tail;
	unsigned pending;
};

static struct psync_queue *to_pq(struct io_queue *q)
{
	return (struct psync_queue *)q;
}

static int psync_init(struct io_queue **out, unsigned depth)
{
	struct psync_queue *pq;

	(void)depth;   /* nothing is ever in flight: no ring to size */
	*out = NULL;
	pq = calloc(1, sizeof(*pq));
	if (!pq)
		return -ENOMEM;
	pq->q.be = &io_psync_backend;
	pq->tail = &pq->head;
	*out = &pq->q;
	return 0;
}

static void psync_free(struct io_queue *q)
{
	free(to_pq(q));
}

static void psync_queue(struct io_queue *q, struct io_req *r)
{
	struct psync_queue *pq = to_pq(q);

	r->res = io_exec_sync(r);
	r->next = NULL;
	*pq->tail = r;
	pq->tail = &r->next;
	pq->pending++;
}

static int psync_submit(struct io_queue *q)
{
	(void)q;
	return 0;
}

static int psync_reap(struct io_queue *q, unsigned min)
{
	struct psync_queue *pq = to_pq(q);
	unsigned n = 0;

	while (pq->head) {
		/* Detach the list first: requests the callbacks queue form the
		 * next batch, so a callback that keeps queueing can't keep us
		 * here once min is reached. */
		struct io_req *r = pq->head, *next;

		pq->head = NULL;
		pq->tail = &pq->head;
		for (; r; r = next) {
			next = r->next;   /* done() may requeue or free r */
			pq->pending--;
			n++;
			if (r->done)
				r->done(r, r->res);
		}
		if (n >= min)
			break;
	}
	return (int)n;
}

static unsigned psync_pending(struct io_queue *q)
{
	return to_pq(q)->pending;
}

const struct io_backend io_psync_backend = {
	.name = "psync",
	.queue_init = psync_init,
	.queue_free = psync_free,
	.queue = psync_queue,
	.submit = psync_submit,
	.reap = psync_reap,
	.pending = psync_pending,
};
