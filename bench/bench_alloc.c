// SPDX-License-Identifier: MIT
/* Allocating writes per refcount width: every iteration writes a fresh
 * image, one request per cluster, and reports what the metadata cost. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "bench.h"

/* args: refcount_bits, cluster, io bytes per cluster, qd, clusters */
void bench_alloc_write(struct bench_run *r)
{
	uint32_t bits = (uint32_t)r->arg[0], cluster = (uint32_t)r->arg[1];
	size_t io = (size_t)r->arg[2];
	unsigned qd = (unsigned)r->arg[3];
	uint64_t n = (uint64_t)r->arg[4], size = n * cluster, total = 0;
	struct bench_meta m = { 0 };
	struct bench_costs c = { 0 };
	char path[4200];
	int ret = 0;

	bench_path(path, sizeof(path), "alloc.qcow2");
	while (bench_next(r)) {
		struct bench_io w = {
			.qd = qd, .io = io, .step = cluster, .span = size, .n = n,
			.write = true,
		};
		uq_image *img;
		double t0, t;

		ret = bench_create(path, size, cluster, bits, 3, UQ_PREALLOC_OFF, NULL);
		if (ret < 0) {
			bench_skip(r, bench_errmsg());
			break;
		}
		if (bench_open(r, path, true, false, 0, &img) < 0)
			break;
		t0 = bench_now();
		bench_measure_begin(r);
		t = bench_qd_image(img, &w);
		/* the metadata is part of the cost: it reaches the file on flush */
		if (t >= 0 && uq_flush(img) < 0)
			t = -EIO;
		bench_measure_end(r);
		t = t < 0 ? t : bench_now() - t0;
		if (t >= 0)
			bench_costs_add(&c, img, n);
		uq_close(img);
		if (t < 0) {
			bench_skip(r, bench_errmsg()[0] ? bench_errmsg() : uq_errmsg());
			break;
		}
		bench_iteration_time(r, t);
		total += n;
		ret = bench_meta(path, &m);
		if (ret < 0) {
			bench_skip(r, bench_errmsg());
			break;
		}
	}
	unlink(path);
	bench_counter(r, "clusters_per_s", (double)total, BENCH_RATE);
	bench_counter(r, "refcount_blocks", (double)m.refcount_blocks, 0);
	bench_counter(r, "l2_tables", (double)m.l2_tables, 0);
	bench_counter(r, "metadata_bytes", (double)m.meta_bytes, BENCH_1024);
	bench_costs_report(r, &c);
	bench_items(r, (int64_t)total);
	bench_bytes(r, (int64_t)(total * io));
}
