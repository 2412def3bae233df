// SPDX-License-Identifier: MIT
/* Refcount widths at scale (UQCOW_BENCH_SCALE=huge only): images of 1 GiB
 * to 1 TiB, a fixed number of operations spread over the whole virtual
 * size, so that disk use and run time stay bounded while every table the
 * size implies (L1, refcount table, refcount blocks of a preallocated
 * file) is real. Each run reports its exact costs per operation at the
 * refcount cache it was given: the default or one covering every block. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

/* Each call allocates, rewrites, frees... one cluster per operation, at
 * ops spots spread over [0, size): spot i lies in the i-th of ops equal
 * stripes, at a pseudo-random cluster of it. */
static uint64_t spot(uint64_t i, uint64_t ops, uint64_t size, uint32_t cluster)
{
	uint64_t stripe = size / ops / cluster, s = 0x9e3779b97f4a7c15ull ^ i;

	return (i * stripe + (stripe > 1 ? bench_rand(&s) % stripe : 0)) * cluster;
}

/* A fixed shuffle of 0 .. n-1 (the order of rewrites and small discards). */
static void shuffle(uint64_t *v, uint64_t n)
{
	uint64_t s = 0x5eed5eed5eedull;

	for (uint64_t i = 0; i < n; i++)
		v[i] = i;
	for (uint64_t i = n; i > 1; i--) {
		uint64_t j = bench_rand(&s) % i, t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

/* Bytes of refcount blocks covering a file of len bytes plus grow more
 * clusters, at least 2 blocks: the "full coverage" cache. */
static uint64_t full_rc_cache(uint64_t len, uint64_t grow, uint32_t cluster, uint32_t bits)
{
	uint64_t per = (uint64_t)cluster * 8 / bits;
	uint64_t clusters = (len + cluster - 1) / cluster + grow;
	uint64_t blocks = (clusters + per - 1) / per + 2;

	/* the blocks hold their own refcounts too: one more per per blocks */
	blocks += blocks / per + 1;
	return blocks * cluster;
}

static int open_rc(struct bench_run *r, const char *path, uint64_t rc_cache, uq_image **img)
{
	struct uq_open_opts o = {
		.struct_size = sizeof(o),
		.flags = UQ_OPEN_RDWR,
		.refcount_cache_size = rc_cache,
	};
	const char *io = getenv("UQCOW_BENCH_IO");
	int ret;

	if (io && !strcmp(io, "io_uring"))
		o.backend = UQ_IO_URING;
	else
		o.backend = UQ_IO_PSYNC;   /* mem can't take a 1 TiB file */
	ret = uq_open(path, &o, img);
	if (ret < 0) {
		bench_skip(r, uq_errmsg());
		return ret;
	}
	uq_reset_stats(*img);
	return 0;
}

struct scale_args {
	int op;
	uint32_t bits, cluster;
	uint64_t size;
	unsigned snaps;
	int full_cache;
	int prealloc;
	uint64_t ops;
};

/* Copy a sparse file: only its data extents (SEEK_DATA / SEEK_HOLE). */
static int copy_sparse(const char *from, const char *to)
{
	int in = open(from, O_RDONLY), out = -1, ret = 0;
	struct stat st;
	off_t pos = 0;

	if (in < 0 || fstat(in, &st) < 0)
		ret = -errno;
	if (ret == 0 && ((out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0 ||
			 ftruncate(out, st.st_size) < 0))
		ret = -errno;
	while (ret == 0 && pos < st.st_size) {
		off_t data = lseek(in, pos, SEEK_DATA), hole;

		if (data < 0) {
			ret = errno == ENXIO ? 0 : -errno;
			break;
		}
		hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0) {
			ret = -errno;
			break;
		}
		for (off_t o = data; ret == 0 && o < hole;) {
			loff_t a = o, b = o;
			ssize_t n = copy_file_range(in, &a, out, &b, (size_t)(hole - o), 0);

			if (n <= 0)
				ret = n < 0 ? -errno : -EIO;
			o += n > 0 ? n : 0;
		}
		pos = hole;
	}
	if (in >= 0)
		close(in);
	if (out >= 0 && close(out) < 0 && ret == 0)
		ret = -errno;
	return ret;
}

/* A metadata-preallocated image is costly to make (a 16 GiB image of
 * 4 KiB clusters maps 4 Mi clusters) and the runs of one geometry follow
 * each other: made once, kept until the geometry changes, copied. */
static int prealloc_copy(const char *path, const struct scale_args *a)
{
	static char key[96];
	char want[96], fix[4200];
	int ret;

	bench_path(fix, sizeof(fix), "prealloc-fixture.qcow2");
	snprintf(want, sizeof(want), "%u/%u/%llu", a->bits, a->cluster,
		 (unsigned long long)a->size);
	if (strcmp(key, want)) {
		unlink(fix);
		key[0] = 0;
		ret = bench_create(fix, a->size, a->cluster, a->bits, 3, UQ_PREALLOC_METADATA,
				   NULL);
		if (ret < 0)
			return ret;
		snprintf(key, sizeof(key), "%s", want);
	}
	return copy_sparse(fix, path);
}

/* The untimed part: a fresh image, ops clusters written at the spots
 * (not on preallocated images: all of them are allocated already), then
 * nsnap snapshots. Leaves the file closed. */
static int prepare(struct bench_run *r, const char *path, const struct scale_args *a)
{
	uint32_t bits = a->op == SCALE_AMEND ? 16 : a->bits;
	uint8_t *buf = NULL;
	uq_image *img;
	char name[32];
	int ret;

	if (a->prealloc) {      /* (never with snapshots: see shim.cc) */
		ret = prealloc_copy(path, a);
		if (ret < 0)
			bench_skip(r, bench_errmsg()[0] ? bench_errmsg() : strerror(-ret));
		return ret;
	}
	ret = bench_create(path, a->size, a->cluster, bits, 3, UQ_PREALLOC_OFF, NULL);
	if (ret < 0) {
		bench_skip(r, bench_errmsg());
		return ret;
	}
	/* setup through a cache that holds every block it touches */
	ret = open_rc(r, path, 64u << 20, &img);
	if (ret < 0)
		return ret;
	buf = bench_buf(4096, 0x3c);
	if (!buf)
		ret = -ENOMEM;
	/* (op:write allocates them, timed) */
	for (uint64_t i = 0; ret == 0 && a->op != SCALE_WRITE && i < a->ops; i++) {
		buf[0] = (uint8_t)i;
		/* 4 KiB: the rest of a cluster reads as zeros, and the file
		 * holds only what was written */
		if (uq_pwrite(img, buf, 4096, spot(i, a->ops, a->size, a->cluster), 0) != 4096)
			ret = -EIO;
	}
	/* (op:snapshot makes its own, timed) */
	for (unsigned i = 0; ret == 0 && a->op != SCALE_SNAPSHOT && i < a->snaps; i++) {
		snprintf(name, sizeof(name), "s%u", i);
		ret = uq_snapshot_create(img, name);
	}
	if (ret == 0)
		ret = uq_flush(img);
	if (ret < 0)
		bench_skip(r, uq_errmsg());
	free(buf);
	uq_close(img);
	return ret;
}

/* The timed part. */
static int work(uq_image *img, const struct scale_args *a, const uint64_t *order,
		uint64_t *ops)
{
	static uint8_t data[4096] = { 0xa5 };
	char name[32];
	int ret = 0;

	*ops = a->ops;
	switch (a->op) {
	case SCALE_WRITE:       /* allocating: a fresh cluster each */
	case SCALE_COW:         /* rewrites: shared clusters are copied */
		for (uint64_t i = 0; ret == 0 && i < a->ops; i++) {
			uint64_t off = spot(a->op == SCALE_COW ? order[i] : i, a->ops, a->size,
					    a->cluster);

			if (uq_pwrite(img, data, sizeof(data), off, 0) != sizeof(data))
				ret = -EIO;
		}
		break;
	case SCALE_DISCARD_ALL:
		*ops = 1;
		ret = uq_discard(img, 0, a->size);
		break;
	case SCALE_DISCARD:
	case SCALE_ZERO:
	case SCALE_ZERO_UNMAP:
		for (uint64_t i = 0; ret == 0 && i < a->ops; i++) {
			uint64_t off = spot(order[i], a->ops, a->size, a->cluster);

			if (a->op == SCALE_DISCARD)
				ret = uq_discard(img, off, a->cluster);
			else
				ret = uq_write_zeroes(img, off, a->cluster,
						      a->op == SCALE_ZERO_UNMAP ? UQ_ZERO_UNMAP : 0);
		}
		break;
	case SCALE_SNAPSHOT:    /* nsnap more snapshots, then all deleted */
		*ops = 2ull * a->snaps;
		for (unsigned i = 0; ret == 0 && i < a->snaps; i++) {
			snprintf(name, sizeof(name), "t%u", i);
			ret = uq_snapshot_create(img, name);
		}
		for (unsigned i = 0; ret == 0 && i < a->snaps; i++) {
			snprintf(name, sizeof(name), "t%u", i);
			ret = uq_snapshot_delete(img, name);
		}
		break;
	case SCALE_AMEND:       /* 16 bits to the run's width */
		*ops = 1;
		ret = uq_amend_refcount_bits(img, a->bits);
		break;
	default:
		ret = -EINVAL;
	}
	return ret;
}

/* args: op, refcount_bits, cluster, size, snapshots, full cache, prealloc, ops */
void bench_scale_op(struct bench_run *r)
{
	struct scale_args a = {
		.op = (int)r->arg[0], .bits = (uint32_t)r->arg[1],
		.cluster = (uint32_t)r->arg[2], .size = (uint64_t)r->arg[3],
		.snaps = (unsigned)r->arg[4], .full_cache = (int)r->arg[5],
		.prealloc = (int)r->arg[6], .ops = (uint64_t)r->arg[7],
	};
	struct bench_costs c = { 0 };
	uint64_t *order = calloc(a.ops, sizeof(*order)), rc_cache = 0;
	uint64_t rc_full = 0, file_len = 0;
	struct bench_meta m = { 0 };
	char path[4200];

	if (!order) {
		bench_skip(r, "out of memory");
		return;
	}
	shuffle(order, a.ops);
	bench_path(path, sizeof(path), "scale.qcow2");
	while (bench_next(r)) {
		struct stat st;
		uq_image *img;
		uint64_t ops;
		double t0;
		int ret;

		if (prepare(r, path, &a) < 0)
			break;
		if (stat(path, &st) < 0) {
			bench_skip(r, strerror(errno));
			break;
		}
		/* every block the file needs, and the blocks of what the run
		 * may add (a cluster and an L2 table per operation) */
		rc_full = full_rc_cache((uint64_t)st.st_size, 2 * a.ops + 64, a.cluster, a.bits);
		rc_cache = a.full_cache ? rc_full : 0;
		if (open_rc(r, path, rc_cache, &img) < 0)
			break;
		t0 = bench_now();
		bench_measure_begin(r);
		ret = work(img, &a, order, &ops);
		if (bench_finish_costs(r, img, ret, t0, &c, ops) < 0)
			break;
		if (bench_meta(path, &m) < 0) {
			bench_skip(r, bench_errmsg());
			break;
		}
		file_len = m.file_length;
	}
	unlink(path);
	free(order);
	bench_costs_report(r, &c);
	if (c.ops) {
		bench_counter(r, "refblock_evictions_per_op",
			      (double)c.v[UQ_STAT_REFBLOCK_EVICTIONS] / (double)c.ops, 0);
		bench_counter(r, "meta_flushes_per_op",
			      (double)c.v[UQ_STAT_META_FLUSHES] / (double)c.ops, 0);
		bench_counter(r, "l2_loads_per_op",
			      (double)c.v[UQ_STAT_L2_READ_OPS] / (double)c.ops, 0);
	}
	bench_counter(r, "rc_cache_bytes", (double)(rc_cache ? rc_cache : 4u << 20), BENCH_1024);
	bench_counter(r, "rc_full_bytes", (double)rc_full, BENCH_1024);
	bench_counter(r, "refcount_blocks", (double)m.refcount_blocks, 0);
	bench_counter(r, "l2_tables", (double)m.l2_tables, 0);
	bench_counter(r, "metadata_bytes", (double)m.meta_bytes, BENCH_1024);
	bench_counter(r, "file_bytes", (double)file_len, BENCH_1024);
	bench_counter(r, "disk_bytes", (double)m.disk_bytes, BENCH_1024);
}
