// SPDX-License-Identifier: MIT
/* Reads that need no data cluster of the image: zero clusters, unallocated
 * clusters and clusters a backing file supplies, next to plain data. */
#include <stdio.h>

#include "bench.h"

#define CLUSTER 65536u

struct fix {
	uint64_t span;
	const char *base;      /* backing image path (overlay fixtures) */
};

/* every cluster zero-flagged, none allocated: metadata preallocation,
 * then write-zeroes with unmap turns each entry into a bare zero flag */
static int make_zero(const char *path, void *arg)
{
	struct fix *f = arg;
	uq_image *img;
	int ret = bench_create(path, f->span, CLUSTER, 16, 3, UQ_PREALLOC_METADATA, NULL);

	/* a cache over the whole image: this is setup, not the measurement */
	if (ret == 0)
		ret = bench_open(NULL, path, true, false, bench_full_cache(f->span, CLUSTER), &img);
	if (ret == 0) {
		ret = uq_write_zeroes(img, 0, f->span, UQ_ZERO_UNMAP);
		if (ret == 0)
			ret = uq_flush(img);
		uq_close(img);
	}
	return ret;
}

static int make_unalloc(const char *path, void *arg)
{
	struct fix *f = arg;

	return bench_create(path, f->span, CLUSTER, 16, 3, UQ_PREALLOC_OFF, NULL);
}

static int make_overlay(const char *path, void *arg)
{
	struct fix *f = arg;

	return bench_create(path, f->span, CLUSTER, 16, 3, UQ_PREALLOC_OFF, f->base);
}

/* args: kind, io, qd, span. Sequential reads through the page cache:
 * what is measured is the engine's work per request. */
void bench_read_kind(struct bench_run *r)
{
	int kind = (int)r->arg[0];
	size_t io = (size_t)r->arg[1];
	unsigned qd = (unsigned)r->arg[2];
	struct fix f = { .span = (uint64_t)r->arg[3] };
	char name[64], path[4200], base[4200];
	uint64_t total = 0, pos = 0;
	struct bench_costs c = { 0 };
	uq_image *img;
	int ret;

	bench_full_name(name, sizeof(name), f.span);
	ret = bench_fixture(base, sizeof(base), name, bench_make_full, &f.span);
	f.base = base;
	if (ret == 0 && kind != READ_DATA) {
		static const char *const kinds[] = { "zero", "unalloc", "overlay" };
		int (*const make[])(const char *, void *) = { make_zero, make_unalloc,
							      make_overlay };

		snprintf(name, sizeof(name), "%s-%llu.qcow2", kinds[kind],
			 (unsigned long long)f.span);
		ret = bench_fixture(path, sizeof(path), name, make[kind], &f);
	} else {
		snprintf(path, sizeof(path), "%s", base);
	}
	if (ret < 0) {
		bench_skip(r, bench_errmsg()[0] ? bench_errmsg() : uq_errmsg());
		return;
	}
	if (bench_open(r, path, false, false, 0, &img) < 0)
		return;
	/* a batch per iteration, continuing where the last one stopped */
	uint64_t batch = f.span / io < 4096 ? f.span / io : 4096;

	while (bench_next(r)) {
		struct bench_io w = {
			.qd = qd, .io = io, .first = pos, .span = f.span, .n = batch,
		};
		double t;

		bench_measure_begin(r);
		t = bench_qd_image(img, &w);
		bench_measure_end(r);

		if (t < 0) {
			bench_skip(r, bench_errmsg());
			break;
		}
		bench_iteration_time(r, t);
		total += batch;
		pos += batch;
	}
	bench_costs_add(&c, img, total);
	bench_costs_report(r, &c);
	uq_close(img);
	bench_items(r, (int64_t)total);
	bench_bytes(r, (int64_t)(total * io));
}
