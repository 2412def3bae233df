// SPDX-License-Identifier: MIT
/* L2 cache hit path (uqcow-bench-parts): lookups in the engine's lock-free
 * cache against the mutex baseline (mutex_cache.c) at 1..N threads. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "format.h"
#include "l2cache.h"
#include "mutex_cache.h"

#define CLUSTER 65536u
#define ENTRIES (CLUSTER / 8)
#define BATCH 256            /* lookups per iteration */

/* ---- hit-path lookups ---- */

/* Table t lives at host offset (t + 1) * CLUSTER; entry i maps guest
 * cluster t * ENTRIES + i to a made-up host cluster. */
static void make_table(uint8_t *tab, uint64_t t)
{
	for (uint64_t i = 0; i < ENTRIES; i++)
		uq_put_be64(tab + 8 * i, ((1ull << 30) + (t * ENTRIES + i) * CLUSTER) |
					  QCOW_OFLAG_COPIED);
}

struct shared_cache {
	uint64_t tables;
	void *cache;
	bool mutex;
};

static pthread_mutex_t caches_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shared_cache caches[8];

static void caches_free(void)
{
	pthread_mutex_lock(&caches_lock);
	for (size_t i = 0; i < sizeof(caches) / sizeof(caches[0]); i++) {
		if (!caches[i].cache)
			continue;
		if (caches[i].mutex)
			mc_destroy(caches[i].cache);
		else
			l2c_destroy(caches[i].cache);
		caches[i].cache = NULL;
	}
	pthread_mutex_unlock(&caches_lock);
}

/* One cache per (kind, size), filled with every table once and kept for
 * the process: threads of a run find it built. */
static void *get_cache(bool mutex, uint64_t tables, const char **why)
{
	struct shared_cache *sc = NULL;
	uint8_t *tab = malloc(CLUSTER);
	void *c = NULL;
	int ret = 0;

	*why = "out of memory";
	pthread_mutex_lock(&caches_lock);
	for (size_t i = 0; i < sizeof(caches) / sizeof(caches[0]); i++) {
		if (caches[i].cache && caches[i].mutex == mutex && caches[i].tables == tables) {
			c = caches[i].cache;
			goto out;
		}
		if (!caches[i].cache && !sc)
			sc = &caches[i];
	}
	if (!sc || !tab)
		goto out;
	if (mutex) {
		ret = mc_create(tables * CLUSTER, CLUSTER, (struct mcache **)&c);
		for (uint64_t t = 0; ret == 0 && t < tables; t++) {
			make_table(tab, t);
			ret = mc_install(c, (t + 1) * CLUSTER, tab);
		}
		if (ret < 0) {
			mc_destroy(c);
			c = NULL;
		}
	} else {
		ret = l2c_create(tables * CLUSTER, CLUSTER, 4096, (struct l2cache **)&c);
		if (ret == 0)
			l2c_set_shared(c, true);
		for (uint64_t t = 0; ret == 0 && t < tables; t++) {
			make_table(tab, t);
			ret = l2c_install(c, (t + 1) * CLUSTER, tab);
		}
		if (ret < 0) {
			l2c_destroy(c);
			c = NULL;
		}
	}
	if (ret < 0)
		*why = strerror(-ret);
	if (c) {
		static bool registered;

		if (!registered)
			bench_on_cleanup(caches_free);
		registered = true;
		*sc = (struct shared_cache){ .tables = tables, .cache = c, .mutex = mutex };
	}
out:
	pthread_mutex_unlock(&caches_lock);
	free(tab);
	return c;
}

static void lookups(struct bench_run *r, bool mutex)
{
	uint64_t tables = (uint64_t)r->arg[0], seed = 0x1234567ull + (uint64_t)r->thread;
	uint64_t sum = 0, n = 0;
	const char *why;
	void *c = get_cache(mutex, tables, &why);

	if (!c) {
		bench_skip(r, why);
		return;
	}
	bench_measure_begin(r);   /* to the end of the run */
	while (bench_next(r)) {
		for (unsigned k = 0; k < BATCH; k++) {
			uint64_t x = bench_rand(&seed), t = x % tables;
			uint64_t idx = (x >> 32) % ENTRIES, out[2] = { 0, 0 };
			int res;

			if (mutex) {
				res = mc_get(c, (t + 1) * CLUSTER, idx, 1, out);
			} else {
				struct l2_waiter w = { 0 };
				uint8_t *fill = NULL;

				res = l2c_get(c, (t + 1) * CLUSTER, idx, 1, out, &w, &fill);
				res = res == L2C_HIT ? 0 : -ENOENT;
			}
			if (res < 0) {
				bench_skip(r, "a lookup missed: the cache lost a table");
				goto done;
			}
			sum += out[0];
		}
		n += BATCH;
	}
done:
	bench_sink += sum;
	bench_items(r, (int64_t)n);
}

/* args: tables */
void bench_cache_hit(struct bench_run *r)
{
	lookups(r, false);
}

void bench_cache_mutex(struct bench_run *r)
{
	lookups(r, true);
}
