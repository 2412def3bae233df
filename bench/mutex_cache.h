/* SPDX-License-Identifier: MIT */
/* The baseline for the L2 cache benchmarks: a plain hash map of tables
 * behind one pthread mutex, with the lookup contract of l2c_get(). */
#ifndef UQ_BENCH_MUTEX_CACHE_H
#define UQ_BENCH_MUTEX_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct mcache;

int mc_create(uint64_t bytes, size_t table_bytes, struct mcache **out);
void mc_destroy(struct mcache *c);

/* Put a table (on-disk bytes, big-endian entries) at off, evicting by
 * CLOCK when full. */
int mc_install(struct mcache *c, uint64_t off, const uint8_t *src);

/* Entry idx (words 64-bit words, host order) of the table at off:
 * 0 and out filled on a hit, -ENOENT on a miss. */
int mc_get(struct mcache *c, uint64_t off, uint64_t idx, unsigned words,
	   uint64_t out[2]);

#endif
