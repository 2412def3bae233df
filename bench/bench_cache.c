// SPDX-License-Identifier: MIT
/* L2 cache benchmarks through the public API: multi-queue reads, and a
 * size sweep across full coverage. The hit path is in bench_l2cache.c. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define CLUSTER 65536u
#define BATCH 256            /* requests per iteration */

/* ---- cache size sweep ---- */

static int make_sparse(const char *path, void *arg)
{
	uint64_t size = *(uint64_t *)arg;

	/* metadata preallocation: every L2 table full, the data file sparse,
	 * so a read costs its L2 lookup and a hole read, nothing more */
	return bench_create(path, size, CLUSTER, 16, 3, UQ_PREALLOC_METADATA, NULL);
}

/* args: l2 cache bytes, image size, qd. Random 4 KiB reads, O_DIRECT. */
void bench_cache_sweep(struct bench_run *r)
{
	uint64_t cache = (uint64_t)r->arg[0], size = (uint64_t)r->arg[1];
	struct bench_io w = {
		.qd = (unsigned)r->arg[2], .io = 4096, .span = size, .n = 4096,
		.random = true,
	};
	char name[64], path[4200];
	uint64_t total = 0;
	uq_image *img;
	int ret;

	snprintf(name, sizeof(name), "sparse-%llu.qcow2", (unsigned long long)size);
	ret = bench_fixture(path, sizeof(path), name, make_sparse, &size);
	if (ret < 0) {
		bench_skip(r, bench_errmsg());
		return;
	}
	if (bench_open(r, path, false, true, cache, &img) < 0)
		return;
	while (bench_next(r)) {
		double t;

		w.seed = 0xfeedull + total;
		bench_measure_begin(r);
		t = bench_qd_image(img, &w);
		bench_measure_end(r);
		if (t < 0) {
			bench_skip(r, bench_errmsg());
			break;
		}
		bench_iteration_time(r, t);
		total += w.n;
	}
	struct bench_costs c = { 0 };

	bench_costs_add(&c, img, total);
	bench_costs_report(r, &c);
	uq_close(img);
	bench_items(r, (int64_t)total);
	/* how much of the image the cache maps */
	bench_counter(r, "coverage", (double)cache / ((double)size / (CLUSTER / 8)), 0);
}

/* ---- multi-queue reads ---- */

static pthread_mutex_t mq_lock = PTHREAD_MUTEX_INITIALIZER;
static uq_image *mq_img;
static uint64_t mq_span;

static void mq_close(void)
{
	pthread_mutex_lock(&mq_lock);
	uq_close(mq_img);
	mq_img = NULL;
	pthread_mutex_unlock(&mq_lock);
}

/* The image every thread reads, opened once (read-only, page cache). */
static uq_image *mq_image(uint64_t span, const char **why)
{
	char name[64], path[4200];
	uq_image *img;

	pthread_mutex_lock(&mq_lock);
	if (mq_img && mq_span != span) {
		uq_close(mq_img);
		mq_img = NULL;
	}
	if (!mq_img) {
		bench_full_name(name, sizeof(name), span);
		*why = bench_errmsg();
		if (bench_fixture(path, sizeof(path), name, bench_make_full, &span) == 0 &&
		    bench_open(NULL, path, false, false, 0, &img) == 0) {
			if (!mq_span)
				bench_on_cleanup(mq_close);
			mq_img = img;
			mq_span = span;
		}
	}
	img = mq_img;
	pthread_mutex_unlock(&mq_lock);
	return img;
}

struct mq_slot {
	uint8_t *buf;
	bool busy;
	int err;
};

static void mq_done(void *arg, ssize_t res)
{
	struct mq_slot *s = arg;

	s->busy = false;
	if (res < 0)
		s->err = (int)res;
}

/* args: qd, span; threads. Random 4 KiB reads, each thread on its own
 * queue of the one image. */
void bench_mq_read(struct bench_run *r)
{
	unsigned qd = (unsigned)r->arg[0];
	uint64_t span = (uint64_t)r->arg[1], seed = 0xabcdefull * (uint64_t)(r->thread + 1);
	uint64_t n = 0;
	const char *why = "";
	struct mq_slot *slots = NULL;
	uq_queue *q = NULL;
	uq_image *img;
	int ret = 0;

	img = mq_image(span, &why);
	if (!img) {
		bench_skip(r, why);
		return;
	}
	ret = uq_queue_create(img, qd, &q);
	slots = calloc(qd, sizeof(*slots));
	for (unsigned i = 0; ret == 0 && slots && i < qd; i++)
		if (!(slots[i].buf = bench_buf(4096, 0)))
			ret = -ENOMEM;
	if (ret < 0 || !slots) {
		bench_skip(r, ret < 0 ? uq_errmsg() : "out of memory");
		goto out;
	}
	/* costs over all threads, taken by thread 0 before the first and
	 * after the last meeting point (no thread reads outside them) */
	struct uq_stats before = { .struct_size = sizeof(before) }, after = before;

	if (r->thread == 0)
		uq_get_stats(img, &before);
	while (bench_next(r)) {
		/* BATCH requests per iteration, qd of them in flight */
		unsigned issued = 0, done = 0;

		while (done < BATCH && ret == 0) {
			for (unsigned i = 0; i < qd && issued < BATCH; i++) {
				if (slots[i].busy)
					continue;
				slots[i].busy = true;
				ret = uq_queue_read(q, slots[i].buf, 4096,
						    (bench_rand(&seed) % (span / 4096)) * 4096,
						    mq_done, &slots[i]);
				if (ret < 0)
					break;
				issued++;
			}
			if (ret == 0) {
				ret = uq_queue_poll(q, 1);
				done += ret > 0 ? (unsigned)ret : 0;
				ret = ret < 0 ? ret : 0;
			}
		}
		for (unsigned i = 0; i < qd && ret == 0; i++)
			ret = slots[i].err;
		if (ret < 0) {
			bench_skip(r, uq_errmsg());
			break;
		}
		n += BATCH;
	}
	if (r->thread == 0 && ret == 0 && uq_get_stats(img, &after) == 0) {
		struct bench_costs c = { .ops = n * (uint64_t)r->threads };

		for (unsigned i = 0; i < UQ_STAT_COUNT; i++)
			c.v[i] = after.v[i] - before.v[i];
		bench_costs_report(r, &c);
	}
out:
	/* nothing may complete into freed buffers */
	for (unsigned i = 0; q && slots && i < qd; i++)
		while (slots[i].busy && uq_queue_poll(q, 1) > 0)
			;
	if (q)
		uq_queue_destroy(q);
	for (unsigned i = 0; slots && i < qd; i++)
		free(slots[i].buf);
	free(slots);
	bench_items(r, (int64_t)n);
}
