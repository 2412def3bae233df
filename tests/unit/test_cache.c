// SPDX-License-Identifier: MIT
/* L2 cache unit test: hits, fills, parked waiters, eviction under pressure
 * and failed fills, against a model of which tables are resident. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l2cache.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); exit(1); } } while (0)

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

static void fill(struct l2cache *c, uint64_t off)
{
	struct w w = { .w.wake = wake };
	const uint8_t *tab;
	uint8_t *buf;

	CHECK(l2c_get(c, off, &w.w, &tab, &buf) == L2C_FILL);
	memset(buf, (int)(off >> 16), 4096);
	l2c_fill_done(c, off, 0);
}

int main(void)
{
	struct l2cache *c;
	struct w w1 = { .w.wake = wake }, w2 = { .w.wake = wake }, w3 = { .w.wake = wake };
	const uint8_t *tab;
	uint8_t *buf, *buf2;

	CHECK(l2c_create(4 * 4096, 4096, 64, &c) == 0);
	CHECK(l2c_slots(c) == 4);

	/* miss, a second request for the same table parks, fill wakes it */
	CHECK(l2c_get(c, 0x10000, &w1.w, &tab, &buf) == L2C_FILL);
	CHECK(l2c_get(c, 0x10000, &w2.w, &tab, &buf2) == L2C_WAIT);
	memset(buf, 0x01, 4096);
	l2c_fill_done(c, 0x10000, 0);
	CHECK(w2.woken == 1 && w2.err == 0 && w1.woken == 1);
	CHECK(l2c_get(c, 0x10000, &w1.w, &tab, &buf) == L2C_HIT && tab[100] == 0x01);
	CHECK(l2c_misses(c) == 1 && l2c_hits(c) == 1);

	/* a failed fill wakes waiters with the error and leaves no entry */
	w1.woken = 0;
	CHECK(l2c_get(c, 0x20000, &w1.w, &tab, &buf) == L2C_FILL);
	CHECK(l2c_get(c, 0x20000, &w3.w, &tab, &buf) == L2C_WAIT);
	l2c_fill_done(c, 0x20000, -5);
	CHECK(w3.woken == 1 && w3.err == -5 && w1.woken == 1 && w1.err == -5);
	CHECK(l2c_get(c, 0x20000, &w1.w, &tab, &buf) == L2C_FILL);
	l2c_fill_done(c, 0x20000, 0);

	/* with every slot filling, a new table parks until one lands */
	struct l2cache *s;
	uint8_t *b[3];

	CHECK(l2c_create(2 * 4096, 4096, 64, &s) == 0);
	CHECK(l2c_get(s, 0x10000, &w1.w, &tab, &b[0]) == L2C_FILL);
	CHECK(l2c_get(s, 0x20000, &w1.w, &tab, &b[1]) == L2C_FILL);
	w3.woken = 0;
	CHECK(l2c_get(s, 0x30000, &w3.w, &tab, &b[2]) == L2C_WAIT);
	l2c_fill_done(s, 0x10000, 0);
	CHECK(w3.woken == 1 && w3.err == 0);
	CHECK(l2c_get(s, 0x30000, &w3.w, &tab, &b[2]) == L2C_FILL);
	l2c_fill_done(s, 0x30000, 0);
	l2c_fill_done(s, 0x20000, 0);
	l2c_destroy(s);

	/* eviction: a working set twice the cache, contents stay right */
	srand(7);
	for (int i = 0; i < 10000; i++) {
		uint64_t off = (uint64_t)(1 + rand() % 8) << 16;
		int r = l2c_get(c, off, &w1.w, &tab, &buf);

		if (r == L2C_FILL) {
			memset(buf, (int)(off >> 16), 4096);
			l2c_fill_done(c, off, 0);
			CHECK(l2c_get(c, off, &w1.w, &tab, &buf) == L2C_HIT);
		}
		CHECK(r != L2C_WAIT);
		CHECK(tab[0] == (uint8_t)(off >> 16) && tab[4095] == (uint8_t)(off >> 16));
	}
	/* invalidation forces a re-read */
	fill(c, 0x90000);
	l2c_invalidate(c, 0x90000);
	CHECK(l2c_get(c, 0x90000, &w1.w, &tab, &buf) == L2C_FILL);
	l2c_fill_done(c, 0x90000, 0);
	l2c_destroy(c);
	printf("test_cache: ok\n");
	return 0;
}
