// SPDX-License-Identifier: MIT
/* L2 cache test: hits, fills, parked waiters, eviction and failed fills on
 * one thread; then readers on several threads (shared mode) against a
 * writer, every entry checked for torn or stale content. Run under TSan. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l2cache.h"
#include "test.h"

#define TB 4096                       /* table bytes: 256 two-word entries */

struct w {
	struct l2_waiter w;
	int woken, err;
};

static void wake(struct l2_waiter *lw, int err)
{
	struct w *w = (struct w *)lw;

	w->woken++;
	w->err = err;
}

/* Word 0 of entry i of the table at off, as a fill writes it. */
static uint64_t val(uint64_t off, uint64_t i)
{
	return (off << 20) | (i << 4);
}

static void put_table(uint8_t *buf, uint64_t off)
{
	for (uint64_t i = 0; i < TB / 16; i++) {
		uint64_t a = __builtin_bswap64(val(off, i)), b = __builtin_bswap64(~val(off, i));

		memcpy(buf + i * 16, &a, 8);
		memcpy(buf + i * 16 + 8, &b, 8);
	}
}

/* Look up entry i of off, filling synchronously on a miss. */
static void get(struct l2cache *c, uint64_t off, uint64_t i, uint64_t out[2])
{
	struct w w = { .w.wake = wake };
	uint8_t *fill;

	for (;;) {
		int r = l2c_get(c, off, i, 2, out, &w.w, &fill);

		CHECK(r >= 0);
		if (r == L2C_HIT)
			return;
		CHECK(r == L2C_FILL);   /* shared mode never parks */
		put_table(fill, off);
		l2c_fill_done(c, off, 0);
	}
}

static void single_thread(void)
{
	struct l2cache *c, *s;
	struct w w1 = { .w.wake = wake }, w2 = { .w.wake = wake }, w3 = { .w.wake = wake };
	uint64_t e[2];
	uint8_t *buf, *b2;

	CHECK(l2c_create(4 * TB, TB, 64, &c) == 0);
	CHECK(l2c_slots(c) == 4);
	/* miss; a second lookup of the same table parks; the fill wakes both */
	CHECK(l2c_get(c, 0x10000, 3, 2, e, &w1.w, &buf) == L2C_FILL);
	CHECK(l2c_get(c, 0x10000, 4, 2, e, &w2.w, &b2) == L2C_WAIT);
	put_table(buf, 0x10000);
	l2c_fill_done(c, 0x10000, 0);
	CHECK(w1.woken == 1 && w2.woken == 1 && w2.err == 0);
	CHECK(l2c_get(c, 0x10000, 7, 2, e, &w1.w, &buf) == L2C_HIT);
	CHECK(e[0] == val(0x10000, 7) && e[1] == ~val(0x10000, 7));
	CHECK(l2c_misses(c) == 1);

	/* a failed fill wakes waiters with the error and leaves nothing */
	w1.woken = w3.woken = 0;
	CHECK(l2c_get(c, 0x20000, 0, 2, e, &w1.w, &buf) == L2C_FILL);
	CHECK(l2c_get(c, 0x20000, 0, 2, e, &w3.w, &buf) == L2C_WAIT);
	l2c_fill_done(c, 0x20000, -5);
	CHECK(w3.woken == 1 && w3.err == -5 && w1.woken == 1 && w1.err == -5);
	CHECK(l2c_get(c, 0x20000, 0, 2, e, &w1.w, &buf) == L2C_FILL);
	put_table(buf, 0x20000);
	l2c_fill_done(c, 0x20000, 0);

	/* with every slot filling, a new table parks until one lands */
	CHECK(l2c_create(2 * TB, TB, 64, &s) == 0);
	CHECK(l2c_get(s, 0x10000, 0, 2, e, &w1.w, &buf) == L2C_FILL);
	CHECK(l2c_get(s, 0x20000, 0, 2, e, &w2.w, &b2) == L2C_FILL);
	w3.woken = 0;
	CHECK(l2c_get(s, 0x30000, 0, 2, e, &w3.w, &buf) == L2C_WAIT);
	l2c_fill_done(s, 0x10000, 0);
	CHECK(w3.woken == 1 && w3.err == 0);
	CHECK(l2c_get(s, 0x30000, 0, 2, e, &w3.w, &buf) == L2C_FILL);
	l2c_fill_done(s, 0x30000, 0);
	l2c_fill_done(s, 0x20000, 0);
	l2c_destroy(s);

	/* eviction with a working set twice the cache: contents stay right */
	l2c_set_shared(c, true);
	srand(7);
	for (int i = 0; i < 20000; i++) {
		uint64_t off = (uint64_t)(1 + rand() % 8) << 16, idx = (uint64_t)(rand() % 256);

		get(c, off, idx, e);
		CHECK(e[0] == val(off, idx) && e[1] == ~val(off, idx));
	}
	/* writer side: install, update, dirty tables are never evicted */
	uint8_t *t = malloc(TB), *out = malloc(TB);

	put_table(t, 0x900000);
	CHECK(l2c_install(c, 0x900000, t) == 0);
	uint64_t v[2] = { 42, ~42ull };

	CHECK(l2c_update(c, 0x900000, 5, 2, v) == 0);
	CHECK(l2c_dirty_count(c) == 1);
	for (int i = 0; i < 1000; i++)
		get(c, (uint64_t)(1 + rand() % 8) << 16, 0, e);
	get(c, 0x900000, 5, e);
	CHECK(e[0] == 42 && e[1] == ~42ull);
	CHECK(l2c_copy_out(c, 0x900000, out) == 0);
	CHECK(memcmp(out, t, 5 * 16) == 0);
	l2c_clean(c, 0x900000);
	l2c_invalidate(c, 0x900000);
	CHECK(!l2c_resident(c, 0x900000));
	free(t);
	free(out);
	l2c_destroy(c);
}

/* ---- several threads ---- */

#define READERS 4
#define TABLES 24           /* working set: three times the cache */

static struct l2cache *mc;
static atomic_bool stop;

static void *reader(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg * 2654435761u + 1, e[2], n = 0;

	while (!atomic_load(&stop) || n < 20000) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		uint64_t off = (1 + seed % TABLES) << 16, idx = (seed >> 20) % 256;

		get(mc, off, idx, e);
		/* both words from one version of the entry, of this table */
		CHECK(e[1] == ~e[0]);
		CHECK(e[0] >> 20 == off || e[0] >> 40 == off);
		n++;
	}
	return NULL;
}

static void *writer(void *arg)
{
	uint8_t *t = malloc(TB);

	(void)arg;
	for (int round = 0; round < 200; round++) {
		uint64_t off = (uint64_t)(1 + round % TABLES) << 16;

		/* update a resident table: the words change as a pair */
		put_table(t, off);
		if (l2c_install(mc, off, t) == 0) {
			for (uint64_t i = 0; i < 256; i++) {
				uint64_t v[2] = { (off << 40) | (uint64_t)round, 0 };

				v[1] = ~v[0];
				CHECK(l2c_update(mc, off, i, 2, v) == 0);
			}
			l2c_clean(mc, off);
		}
	}
	free(t);
	atomic_store(&stop, true);
	return NULL;
}

int main(void)
{
	pthread_t r[READERS], w;

	single_thread();
	CHECK(l2c_create(8 * TB, TB, 64, &mc) == 0);
	l2c_set_shared(mc, true);
	for (uintptr_t i = 0; i < READERS; i++)
		CHECK(pthread_create(&r[i], NULL, reader, (void *)(i + 1)) == 0);
	CHECK(pthread_create(&w, NULL, writer, NULL) == 0);
	pthread_join(w, NULL);
	for (int i = 0; i < READERS; i++)
		pthread_join(r[i], NULL);
	printf("test_cache: ok (%llu misses with %d threads)\n",
	       (unsigned long long)l2c_misses(mc), READERS + 1);
	l2c_destroy(mc);
	return 0;
}
