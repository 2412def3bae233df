// SPDX-License-Identifier: MIT
/* Parse costs of the pure codecs: a header with its extensions, every entry
 * of an L2 table, and a walk over a refcount block of each width. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "format.h"

#define BATCH 64

/* args: version. The first 4 KiB of an image uq_create wrote (header,
 * extensions, feature name table), decoded as open does. */
void bench_parse_header(struct bench_run *r)
{
	uint32_t version = (uint32_t)r->arg[0];
	uint8_t head[4096];
	struct uq_exts *e = malloc(sizeof(*e));
	char path[4200];
	uint64_t n = 0, fsize = 0;
	FILE *f;
	size_t got = 0;

	bench_path(path, sizeof(path), "header.qcow2");
	if (e && bench_create(path, 1ull << 30, 65536, 16, version, UQ_PREALLOC_OFF, NULL) == 0 &&
	    (f = fopen(path, "rb"))) {
		memset(head, 0, sizeof(head));
		got = fread(head, 1, sizeof(head), f);
		if (fseek(f, 0, SEEK_END) == 0 && ftell(f) > 0)
			fsize = (uint64_t)ftell(f);
		fclose(f);
	}
	unlink(path);
	if (!got || !fsize) {
		bench_skip(r, bench_errmsg()[0] ? bench_errmsg() : "can't make a header");
		free(e);
		return;
	}
	bench_measure_begin(r);   /* to the end of the run */
	while (bench_next(r)) {
		for (unsigned k = 0; k < BATCH; k++) {
			struct uq_header h;

			if (uq_header_decode(head, sizeof(head), fsize, &h) < 0 ||
			    uq_exts_decode(head, sizeof(head), &h, e) < 0) {
				bench_skip(r, uq_errmsg());
				goto out;
			}
		}
		n += BATCH;
	}
out:
	bench_items(r, (int64_t)n);
	free(e);
}

/* args: cluster, extended. A full table of standard allocated entries
 * (extended: with allocation bitmaps), every entry decoded. */
void bench_parse_l2(struct bench_run *r)
{
	uint32_t cluster = (uint32_t)r->arg[0];
	bool ext = r->arg[1] != 0;
	struct uq_header h = {
		.version = 3, .cluster_bits = (uint32_t)__builtin_ctz(cluster),
		.refcount_order = 4, .header_length = QCOW_V3_HEADER_LEN,
		.incompatible_features = ext ? QCOW_INCOMPAT_EXTL2 : 0,
	};
	struct uq_geom g;
	uint8_t *tab = malloc(cluster);
	uint64_t n = 0, sum = 0;

	if (!tab) {
		bench_skip(r, "out of memory");
		return;
	}
	uq_geom_init(&h, &g);
	for (uint64_t i = 0; i < g.l2_entries; i++) {
		uint8_t *e = tab + i * g.l2_entry_bytes;

		uq_put_be64(e, ((1ull << 30) + i * cluster) | QCOW_OFLAG_COPIED);
		if (ext)
			uq_put_be64(e + 8, 0xffffffffull);   /* all allocated */
	}
	bench_measure_begin(r);   /* to the end of the run */
	while (bench_next(r)) {
		for (uint64_t i = 0; i < g.l2_entries; i++) {
			const uint8_t *e = tab + i * g.l2_entry_bytes;
			struct uq_l2map m;

			if (uq_l2_decode(&g, uq_be64(e), ext ? uq_be64(e + 8) : 0, &m) < 0) {
				bench_skip(r, uq_errmsg());
				goto out;
			}
			sum += m.host_off;
		}
		n += g.l2_entries;
	}
out:
	bench_sink += sum;
	bench_items(r, (int64_t)n);
	free(tab);
}

/* args: refcount_bits, cluster. Every entry of one refcount block read,
 * as a check or an allocation scan walks it. */
void bench_parse_refcount(struct bench_run *r)
{
	uint32_t bits = (uint32_t)r->arg[0], cluster = (uint32_t)r->arg[1];
	uint32_t order = (uint32_t)__builtin_ctz(bits);
	uint64_t entries = (uint64_t)cluster * 8 / bits, n = 0, sum = 0, seed = 42;
	uint8_t *blk = malloc(cluster);

	if (!blk) {
		bench_skip(r, "out of memory");
		return;
	}
	for (uint64_t i = 0; i < entries; i++)
		uq_refcount_set(blk, order, i, bench_rand(&seed) & uq_refcount_max(order));
	bench_measure_begin(r);   /* to the end of the run */
	while (bench_next(r)) {
		for (uint64_t i = 0; i < entries; i++)
			sum += uq_refcount_get(blk, order, i);
		n += entries;
	}
	bench_sink += sum;
	bench_counter(r, "entries_per_block", (double)entries, 0);
	bench_items(r, (int64_t)n);
	free(blk);
}
