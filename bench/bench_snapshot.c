// SPDX-License-Identifier: MIT
/* Writes and discards after internal snapshots, per refcount width: what a
 * snapshot costs (copy on write, shared clusters) and which widths can
 * hold how many (1 bit none, 2 bits three references, ...). */
#include <stdio.h>
#include <unistd.h>

#include "bench.h"

#define CLUSTER 65536u

enum op { OP_WRITE, OP_DISCARD };

/* An image of size bytes, every cluster written, then nsnap snapshots:
 * all untimed. Returns 0, or -1 after telling the harness why not. */
static int prepare(struct bench_run *r, const char *path, uint32_t bits, uint64_t size,
		   unsigned nsnap, uq_image **out)
{
	static uint8_t buf[CLUSTER];
	uq_image *img;
	char name[32], msg[160];

	if (bench_create(path, size, CLUSTER, bits, 3, UQ_PREALLOC_OFF, NULL) < 0) {
		bench_skip(r, bench_errmsg());
		return -1;
	}
	if (bench_open(r, path, true, false, 0, &img) < 0)
		return -1;
	for (uint64_t off = 0; off < size; off += CLUSTER) {
		buf[0] = (uint8_t)(off >> 16);
		if (uq_pwrite(img, buf, CLUSTER, off, 0) != CLUSTER) {
			bench_skip(r, uq_errmsg());
			uq_close(img);
			return -1;
		}
	}
	for (unsigned i = 0; i < nsnap; i++) {
		snprintf(name, sizeof(name), "s%u", i);
		if (uq_snapshot_create(img, name) < 0) {
			/* the width can't count that many references: a result */
			snprintf(msg, sizeof(msg), "refcount_bits=%u can't hold %u snapshots: %s",
				 bits, nsnap, uq_errmsg());
			bench_unavailable(r, msg);
			uq_close(img);
			return -1;
		}
	}
	*out = img;
	return 0;
}

static void run(struct bench_run *r, enum op op, uint32_t bits, unsigned nsnap,
		uint64_t size)
{
	static uint8_t data[4096];
	uint64_t clusters = 0;
	struct bench_costs c = { 0 };
	char path[4200];

	bench_path(path, sizeof(path), "snap.qcow2");
	while (bench_next(r)) {
		uq_image *img;
		double t0;
		int ret = 0;

		if (prepare(r, path, bits, size, nsnap, &img) < 0)
			break;
		uq_reset_stats(img);   /* the costs of what is timed */
		t0 = bench_now();
		bench_measure_begin(r);
		if (op == OP_WRITE) {
			/* 4 KiB into every cluster: each shared one is copied */
			for (uint64_t off = 0; off < size && ret == 0; off += CLUSTER)
				ret = uq_pwrite(img, data, sizeof(data), off, 0) == sizeof(data) ? 0 : -1;
		} else {
			ret = uq_discard(img, 0, size);
		}
		if (bench_finish_costs(r, img, ret, t0, &c, op == OP_WRITE ? size / CLUSTER : 1) < 0)
			break;
		clusters += size / CLUSTER;
	}
	unlink(path);
	bench_counter(r, "clusters_per_s", (double)clusters, BENCH_RATE);
	bench_costs_report(r, &c);   /* per request */
}

/* args: refcount_bits, snapshots, size */
void bench_snap_write(struct bench_run *r)
{
	run(r, OP_WRITE, (uint32_t)r->arg[0], (unsigned)r->arg[1], (uint64_t)r->arg[2]);
}

void bench_snap_discard(struct bench_run *r)
{
	run(r, OP_DISCARD, (uint32_t)r->arg[0], (unsigned)r->arg[1], (uint64_t)r->arg[2]);
}
