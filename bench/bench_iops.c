// SPDX-License-Identifier: MIT
/* Read and rewrite IOPS over a queue-depth sweep with O_DIRECT, on a fully
 * allocated image and, in the same iteration, on a raw file (the ceiling). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define CLUSTER 65536u

static int make_raw(const char *path, void *arg)
{
	uint64_t span = *(uint64_t *)arg;
	const size_t chunk = 1u << 20;
	uint8_t *buf = bench_buf(chunk, 0x40);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int ret = fd < 0 || !buf ? -errno : 0;

	for (uint64_t off = 0; ret == 0 && off < span; off += chunk)
		if (pwrite(fd, buf, chunk, (off_t)off) != (ssize_t)chunk)
			ret = -EIO;
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	free(buf);
	return ret;
}

/* args: write, random, io, qd, span */
void bench_iops(struct bench_run *r)
{
	struct bench_io w = {
		.write = r->arg[0] != 0,
		.random = r->arg[1] != 0,
		.io = (size_t)r->arg[2],
		.qd = (unsigned)r->arg[3],
		.span = (uint64_t)r->arg[4],
	};
	char name[64], qpath[4200], rpath[4200];
	double tq = 0, tr = 0;
	uint64_t total = 0, iter = 0;
	uq_image *img = NULL;
	int fd = -1, ret;

	/* enough requests per iteration that filling and draining the
	 * queue are a small part of it */
	w.n = (uint64_t)w.qd * 64;
	if (w.n < 512)
		w.n = 512;
	if (w.n > 4096)
		w.n = 4096;
	bench_full_name(name, sizeof(name), w.span);
	ret = bench_fixture(qpath, sizeof(qpath), name, bench_make_full, &w.span);
	snprintf(name, sizeof(name), "full-%llu.raw", (unsigned long long)w.span);
	if (ret == 0)
		ret = bench_fixture(rpath, sizeof(rpath), name, make_raw, &w.span);
	if (ret < 0) {
		bench_skip(r, bench_errmsg()[0] ? bench_errmsg() : strerror(-ret));
		return;
	}
	fd = open(rpath, O_RDWR | O_DIRECT);
	if (fd < 0) {
		char msg[160];

		snprintf(msg, sizeof(msg), "O_DIRECT refused on %s: %s", bench_dir(),
			 strerror(errno));
		bench_unavailable(r, msg);
		return;
	}
	if (bench_open(r, qpath, w.write, true, 0, &img) < 0) {
		close(fd);
		return;
	}
	while (bench_next(r)) {
		double q, raw;

		w.seed = 0x9e3779b97f4a7c15ull + iter;
		w.first = total;
		/* alternate which goes first: neither gets a warmer device */
		if (iter & 1) {
			raw = bench_qd_raw(fd, &w);
			bench_measure_begin(r);
			q = raw < 0 ? raw : bench_qd_image(img, &w);
			bench_measure_end(r);
		} else {
			bench_measure_begin(r);
			q = bench_qd_image(img, &w);
			bench_measure_end(r);
			raw = q < 0 ? q : bench_qd_raw(fd, &w);
		}
		if (raw == -ENOSYS) {
			bench_unavailable(r, bench_errmsg());
			break;
		}
		if (q < 0 || raw < 0) {
			bench_skip(r, bench_errmsg());
			break;
		}
		bench_iteration_time(r, q);
		tq += q;
		tr += raw;
		total += w.n;
		iter++;
	}
	struct bench_costs c = { 0 };

	if (w.write)
		uq_flush(img);
	bench_costs_add(&c, img, total);
	bench_costs_report(r, &c);   /* the image's side */
	uq_close(img);
	close(fd);
	bench_items(r, (int64_t)total);
	bench_bytes(r, (int64_t)(total * w.io));
	if (tq > 0 && tr > 0) {
		bench_counter(r, "iops", (double)total / tq, 0);
		bench_counter(r, "raw_iops", (double)total / tr, 0);
		/* the image's throughput as a fraction of the raw file's */
		bench_counter(r, "vs_raw", tr / tq, 0);
	}
}
