/* SPDX-License-Identifier: MIT */
/* L2 table cache: tables keyed by host offset, filled asynchronously by the
 * caller on a miss, with the requests that need a table parked meanwhile. */
#ifndef UQ_L2CACHE_H
#define UQ_L2CACHE_H

#include <stddef.h>
#include <stdint.h>

struct l2cache;

/* A parked request: wake() runs when the table it waited for has landed
 * (err 0: look it up again) or failed (err < 0). */
struct l2_waiter {
	struct l2_waiter *next;
	void (*wake)(struct l2_waiter *w, int err);
};

enum l2c_result {
	L2C_HIT,   /* *tab points at the table (big-endian entries) */
	L2C_FILL,  /* caller reads the table into *fill, then l2c_fill_done();
		    * w is parked too and woken by that call */
	L2C_WAIT,  /* w was parked; it is woken when a fill completes */
};

/* bytes: cache size; table_bytes: one table (a cluster). At least two
 * tables are kept whatever bytes says. */
int l2c_create(uint64_t bytes, size_t table_bytes, size_t align,
	       struct l2cache **out);
void l2c_destroy(struct l2cache *c);

/* Find the table at off. The pointer stays valid until the caller returns
 * to the event loop (no fill can evict it before then). */
int l2c_get(struct l2cache *c, uint64_t off, struct l2_waiter *w,
	    const uint8_t **tab, uint8_t **fill);

/* The read started by L2C_FILL for off finished (err 0 or -errno): the
 * table becomes visible, or the slot is dropped; waiters are woken. */
void l2c_fill_done(struct l2cache *c, uint64_t off, int err);

/* ---- for writers (the thread that owns the image) ---- */

/* Writable view of a resident table, NULL if it isn't cached. */
uint8_t *l2c_peek(struct l2cache *c, uint64_t off);

/* Put a new table at off without reading it (it's all zeros or a copy the
 * caller fills in). Fails with -EBUSY when every slot is pinned. */
int l2c_install(struct l2cache *c, uint64_t off, uint8_t **buf);

/* A dirty table stays resident until l2c_clean() says it is on disk. */
void l2c_set_dirty(struct l2cache *c, uint64_t off);
void l2c_clean(struct l2cache *c, uint64_t off);
size_t l2c_dirty_count(const struct l2cache *c);

/* Calls fn for every dirty table, in ascending offset order. */
int l2c_for_each_dirty(struct l2cache *c,
		       int (*fn)(void *arg, uint64_t off, uint8_t *tab), void *arg);

/* Drop a cached table (after it was rewritten or freed). */
void l2c_invalidate(struct l2cache *c, uint64_t off);

size_t l2c_slots(const struct l2cache *c);
uint64_t l2c_hits(const struct l2cache *c);
uint64_t l2c_misses(const struct l2cache *c);

#endif
