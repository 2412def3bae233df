/* SPDX-License-Identifier: MIT */
/* L2 table cache: tables keyed by host offset. Hits copy one entry out
 * without a lock; a miss is filled by the caller while the requests that
 * need the same table are parked (or, across threads, wait for it). */
#ifndef UQ_L2CACHE_H
#define UQ_L2CACHE_H

#include <stdbool.h>
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
	L2C_HIT,   /* the entry was copied out */
	L2C_FILL,  /* caller reads the table into *fill, then l2c_fill_done();
		    * w is parked too and woken by that call */
	L2C_WAIT,  /* w was parked; it is woken when a fill completes */
};

/* bytes: cache size; table_bytes: one table (a cluster). At least two
 * tables are kept whatever bytes says. */
int l2c_create(uint64_t bytes, size_t table_bytes, size_t align,
	       struct l2cache **out);
void l2c_destroy(struct l2cache *c);

/* Shared mode, for images driven by several threads: a miss seen by a
 * thread while another thread fills that table waits for it instead of
 * parking, so callers must fill synchronously (no thread may depend on
 * another thread's event loop). Set before the threads start. */
void l2c_set_shared(struct l2cache *c, bool shared);
bool l2c_shared(struct l2cache *c);

/* Entry idx (words 64-bit words, host order) of the table at off. The hit
 * path takes no lock: a per-slot sequence counter tells a reader that a
 * slot changed under it, and it retries. */
int l2c_get(struct l2cache *c, uint64_t off, uint64_t idx, unsigned words,
	    uint64_t out[2], struct l2_waiter *w, uint8_t **fill);

/* The read started by L2C_FILL for off finished (err 0 or -errno): the
 * table becomes visible, or the slot is dropped; waiters are woken. */
void l2c_fill_done(struct l2cache *c, uint64_t off, int err);

/* ---- writer side: one thread at a time ---- */

/* Is the table resident (after which it stays so while dirty)? */
bool l2c_resident(struct l2cache *c, uint64_t off);

/* Put a table at off without reading it: a copy of src, or zeros; it is
 * dirty from then on. Fails with -EBUSY when no slot can be taken. */
int l2c_install(struct l2cache *c, uint64_t off, const uint8_t *src);

/* Set entry idx (words 64-bit words, host order) of a resident table;
 * marks it dirty. Readers see both words change together. */
int l2c_update(struct l2cache *c, uint64_t off, uint64_t idx, unsigned words,
	       const uint64_t v[2]);

/* Copy a resident table out (big-endian, as on disk). */
int l2c_copy_out(struct l2cache *c, uint64_t off, uint8_t *dst);

/* A dirty table stays resident until l2c_clean() says it is on disk. */
void l2c_set_dirty(struct l2cache *c, uint64_t off);
void l2c_clean(struct l2cache *c, uint64_t off);
size_t l2c_dirty_count(const struct l2cache *c);
bool l2c_is_dirty(struct l2cache *c, uint64_t off);

/* Calls fn for every dirty table, in ascending offset order, with a copy
 * of its on-disk bytes (aligned for the file) that fn owns and frees. */
int l2c_for_each_dirty(struct l2cache *c,
		       int (*fn)(void *arg, uint64_t off, uint8_t *tab), void *arg);

/* Drop a cached table (after it was rewritten or freed). */
void l2c_invalidate(struct l2cache *c, uint64_t off);

size_t l2c_slots(const struct l2cache *c);
uint64_t l2c_misses(const struct l2cache *c);
/* Valid tables dropped to make room (a thread-safe read). */
uint64_t l2c_evictions(struct l2cache *c);

#endif
