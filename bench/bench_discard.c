// SPDX-License-Identifier: MIT
/* Discard and write-zeroes of an allocated range: every iteration builds a
 * preallocated image (untimed) and times one request over all of it; and
 * many small random discards. Discards either free the clusters (and
 * punch them) or, with discard-no-unref, keep them as zero clusters. */
#include <stdio.h>
#include <unistd.h>

#include "bench.h"

#define CLUSTER 65536u

enum op { OP_DISCARD, OP_ZERO, OP_ZERO_UNMAP };

/* A falloc-preallocated image (every cluster allocated and backed by
 * file blocks, so that freeing them has real work to do), opened for
 * writing, discard-no-unref or not; the clock and the counters start. */
static int setup(struct bench_run *r, const char *path, uint64_t size, uint32_t bits,
		 uint32_t version, bool no_unref, uq_image **img, double *t0)
{
	int ret = bench_create(path, size, CLUSTER, bits, version, UQ_PREALLOC_FALLOC, NULL);

	if (ret < 0) {
		bench_skip(r, bench_errmsg());
		return ret;
	}
	ret = bench_open_flags(r, path, UQ_OPEN_RDWR | (no_unref ? UQ_OPEN_DISCARD_NO_UNREF : 0),
			       0, img);
	if (ret < 0)
		return ret;
	*t0 = bench_now();
	bench_measure_begin(r);
	return 0;
}

/* One request over [0, size) of a fully allocated image, plus the flush
 * that puts its metadata on disk. */
static void run(struct bench_run *r, enum op op, uint32_t bits, uint32_t version,
		uint64_t size, bool no_unref)
{
	struct bench_meta m = { 0 };
	struct bench_costs c = { 0 };
	uint64_t total = 0, disk = 0;
	char path[4200];

	bench_path(path, sizeof(path), "discard.qcow2");
	while (bench_next(r)) {
		uq_image *img;
		double t0;
		int ret;

		if (setup(r, path, size, bits, version, no_unref, &img, &t0) < 0)
			break;
		if (op == OP_DISCARD)
			ret = uq_discard(img, 0, size);
		else
			ret = uq_write_zeroes(img, 0, size, op == OP_ZERO_UNMAP ? UQ_ZERO_UNMAP : 0);
		if (bench_finish_costs(r, img, ret, t0, &c, 1) < 0)
			break;
		total += size;
		if (bench_meta(path, &m) < 0) {
			bench_skip(r, bench_errmsg());
			break;
		}
		disk = m.disk_bytes;
	}
	unlink(path);
	bench_counter(r, "clusters_per_s", (double)(total / CLUSTER), BENCH_RATE);
	/* what is still allocated afterwards: 0 after discard or unmap,
	 * every cluster when zeroing keeps the allocation */
	bench_counter(r, "data_clusters_after", (double)m.data_clusters, 0);
	/* file blocks still in use: whether freed clusters were punched */
	bench_counter(r, "disk_bytes_after", (double)disk, BENCH_1024);
	bench_costs_report(r, &c);   /* per request over the whole image */
	bench_bytes(r, (int64_t)total);
}

/* args: refcount_bits, version, size, no_unref */
void bench_discard(struct bench_run *r)
{
	run(r, OP_DISCARD, (uint32_t)r->arg[0], (uint32_t)r->arg[1], (uint64_t)r->arg[2],
	    r->arg[3] != 0);
}

/* count random one-cluster discards over a preallocated image of size
 * bytes (default caches), then the flush: the costs per discard show the
 * syncs and punches a small L2 cache forces (issue 15: one sync per
 * request before frees were batched). args: bits, no_unref, size, count */
void bench_discard_random(struct bench_run *r)
{
	uint32_t bits = (uint32_t)r->arg[0];
	bool no_unref = r->arg[1] != 0;
	uint64_t size = (uint64_t)r->arg[2], count = (uint64_t)r->arg[3], done = 0;
	struct bench_costs c = { 0 };
	char path[4200];

	bench_path(path, sizeof(path), "discard-random.qcow2");
	while (bench_next(r)) {
		uint64_t seed = 0x9e3779b97f4a7c15ull;
		uq_image *img;
		double t0;
		int ret = setup(r, path, size, bits, 3, no_unref, &img, &t0);

		if (ret < 0)
			break;
		for (uint64_t i = 0; i < count && ret == 0; i++)
			ret = uq_discard(img, bench_rand(&seed) % (size / CLUSTER) * CLUSTER, CLUSTER);
		if (bench_finish_costs(r, img, ret, t0, &c, count) < 0)
			break;
		done += count;
	}
	unlink(path);
	bench_counter(r, "discards_per_s", (double)done, BENCH_RATE);
	bench_costs_report(r, &c);   /* per discard */
	bench_bytes(r, (int64_t)(done * CLUSTER));
}

/* args: refcount_bits, version, unmap, size */
void bench_write_zeroes(struct bench_run *r)
{
	run(r, r->arg[2] ? OP_ZERO_UNMAP : OP_ZERO, (uint32_t)r->arg[0], (uint32_t)r->arg[1],
	    (uint64_t)r->arg[3], false);
}
