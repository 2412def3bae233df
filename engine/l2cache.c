// SPDX-License-Identifier: MIT
/* L2 table cache: lock-free hits through per-slot sequence counters, misses
 * and eviction (CLOCK) under one mutex. Table buffers are never freed while
 * the cache lives, so a reader that raced with a refill only has to notice
 * (the sequence changed) and retry: no epochs or hazard pointers needed. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "l2cache.h"

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_VALID };

#define NO_KEY 0            /* offset 0 is the header: never an L2 table */
#define TOMB UINT64_MAX     /* hash entry of a removed key */

struct slot {
	/* Odd while the slot changes. Readers sample it before and after
	 * copying an entry; writers hold the mutex. */
	_Atomic uint64_t seq;
	_Atomic uint64_t key;       /* table offset, NO_KEY when free */
	_Atomic int state;
	_Atomic bool ref;           /* CLOCK: used since the hand last passed */
	_Atomic uint64_t *words;    /* the table, big-endian words */
	uint8_t *io;                /* fill buffer: I/O never writes words */
	bool dirty;                 /* under the mutex */
	struct l2_waiter *waiters;  /* under the mutex */
};

struct l2cache {
	struct slot *slots;
	size_t nslots;
	/* open addressing: key -> slot; readers probe without the lock and
	 * validate what they find against the slot itself */
	_Atomic uint64_t *hkey;
	_Atomic uint32_t *hslot;
	size_t nbuckets;            /* power of two, >= 2 * nslots */
	size_t ntomb;               /* removed keys still taking a bucket */
	size_t hand;
	size_t table_bytes, nwords;
	size_t align;
	_Atomic bool shared;        /* set once, before threads share it */
	pthread_mutex_t lock;
	pthread_cond_t filled;      /* shared mode: a fill finished */
	struct l2_waiter *starved, **starved_tail;
	size_t ndirty;
	uint64_t misses;            /* under the mutex */
	uint64_t evictions;         /* under the mutex */
};

static size_t bucket_of(const struct l2cache *c, uint64_t off)
{
	/* offsets are cluster multiples: mix the high bits down */
	return (size_t)((off * 0x9e3779b97f4a7c15ull) >> 32) & (c->nbuckets - 1);
}

int l2c_create(uint64_t bytes, size_t table_bytes, size_t align, struct l2cache **out)
{
	struct l2cache *c;
	uint64_t n = bytes / table_bytes;

	if (n < 2)
		n = 2;
	if (n > (1u << 24) || table_bytes % 8)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->nslots = (size_t)n;
	c->nbuckets = 4;
	while (c->nbuckets < 2 * c->nslots)
		c->nbuckets <<= 1;
	c->slots = calloc(c->nslots, sizeof(*c->slots));
	c->hkey = calloc(c->nbuckets, sizeof(*c->hkey));
	c->hslot = calloc(c->nbuckets, sizeof(*c->hslot));
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->filled, NULL);
	if (!c->slots || !c->hkey || !c->hslot) {
		l2c_destroy(c);
		return -ENOMEM;
	}
	c->table_bytes = table_bytes;
	c->nwords = table_bytes / 8;
	c->align = align < 64 ? 64 : align;
	c->starved_tail = &c->starved;
	*out = c;
	return 0;
}

void l2c_destroy(struct l2cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; c->slots && i < c->nslots; i++) {
		free((void *)c->slots[i].words);
		free(c->slots[i].io);
	}
	free(c->slots);
	free((void *)c->hkey);
	free((void *)c->hslot);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->filled);
	free(c);
}

void l2c_set_shared(struct l2cache *c, bool shared)
{
	atomic_store_explicit(&c->shared, shared, memory_order_relaxed);
}

bool l2c_shared(struct l2cache *c)
{
	return atomic_load_explicit(&c->shared, memory_order_relaxed);
}

/* ---- the index ---- */

static struct slot *find_locked(struct l2cache *c, uint64_t off)
{
	size_t b = bucket_of(c, off);

	for (size_t i = 0; i < c->nbuckets; i++, b = (b + 1) & (c->nbuckets - 1)) {
		uint64_t k = atomic_load_explicit(&c->hkey[b], memory_order_relaxed);

		if (k == NO_KEY)
			return NULL;
		if (k == off)
			return &c->slots[atomic_load_explicit(&c->hslot[b], memory_order_relaxed)];
	}
	return NULL;
}

static void index_put(struct l2cache *c, uint64_t off, size_t slot)
{
	size_t b = bucket_of(c, off);

	for (;;) {
		uint64_t k = atomic_load_explicit(&c->hkey[b], memory_order_relaxed);

		if (k == NO_KEY)
			break;
		if (k == TOMB) {
			c->ntomb--;
			break;
		}
		b = (b + 1) & (c->nbuckets - 1);
	}
	/* slot first: a reader that sees the key must find a real slot */
	atomic_store_explicit(&c->hslot[b], (uint32_t)slot, memory_order_relaxed);
	atomic_store_explicit(&c->hkey[b], off, memory_order_release);
}

static void index_del(struct l2cache *c, uint64_t off)
{
	size_t b = bucket_of(c, off);

	for (size_t i = 0; i < c->nbuckets; i++, b = (b + 1) & (c->nbuckets - 1)) {
		uint64_t k = atomic_load_explicit(&c->hkey[b], memory_order_relaxed);

		if (k == NO_KEY)
			return;
		if (k == off) {
			atomic_store_explicit(&c->hkey[b], TOMB, memory_order_release);
			c->ntomb++;
			return;
		}
	}
}

/* Tombstones only accumulate: rebuild the index when they crowd it. */
static void index_compact(struct l2cache *c)
{
	/* live keys are at most nslots <= nbuckets / 2 */
	if (c->ntomb * 4 < c->nbuckets)
		return;
	c->ntomb = 0;
	for (size_t b = 0; b < c->nbuckets; b++)
		atomic_store_explicit(&c->hkey[b], NO_KEY, memory_order_release);
	for (size_t i = 0; i < c->nslots; i++) {
		uint64_t k = atomic_load_explicit(&c->slots[i].key, memory_order_relaxed);

		if (k != NO_KEY)
			index_put(c, k, i);
	}
}

/* ---- slot changes (mutex held): seqlock writer side ---- */

/* Ordering without fences (ThreadSanitizer can't model them): every store
 * of a change is a release store, so it can't become visible before the
 * odd sequence; readers load with acquire, so their second look at the
 * sequence can't move before the loads it validates. On x86 all of these
 * are plain moves. */
static void slot_begin(struct slot *s)
{
	uint64_t q = atomic_load_explicit(&s->seq, memory_order_relaxed);

	atomic_store_explicit(&s->seq, q + 1, memory_order_relaxed);
}

static void slot_end(struct slot *s)
{
	uint64_t q = atomic_load_explicit(&s->seq, memory_order_relaxed);

	/* release: the change is visible before the even value */
	atomic_store_explicit(&s->seq, q + 1, memory_order_release);
}

static void store_words(struct l2cache *c, struct slot *s, const uint8_t *src)
{
	for (size_t i = 0; i < c->nwords; i++) {
		uint64_t w = 0;

		if (src)
			memcpy(&w, src + i * 8, 8);
		atomic_store_explicit(&s->words[i], w, memory_order_release);
	}
}

static void drop_locked(struct l2cache *c, struct slot *s)
{
	uint64_t k = atomic_load_explicit(&s->key, memory_order_relaxed);

	slot_begin(s);
	index_del(c, k);
	atomic_store_explicit(&s->key, NO_KEY, memory_order_release);
	atomic_store_explicit(&s->state, SLOT_FREE, memory_order_release);
	slot_end(s);
	if (s->dirty)
		c->ndirty--;
	s->dirty = false;
}

/* CLOCK: a slot used since the hand last passed gets a second chance.
 * Slots being filled and dirty slots are never taken. */
static struct slot *victim_locked(struct l2cache *c)
{
	for (size_t step = 0; step < 2 * c->nslots; step++) {
		struct slot *s = &c->slots[c->hand];
		int st = atomic_load_explicit(&s->state, memory_order_relaxed);

		c->hand = (c->hand + 1) % c->nslots;
		if (st == SLOT_FREE)
			return s;
		if (st == SLOT_FILLING || s->dirty)
			continue;
		if (atomic_load_explicit(&s->ref, memory_order_relaxed)) {
			atomic_store_explicit(&s->ref, false, memory_order_relaxed);
			continue;
		}
		drop_locked(c, s);
		c->evictions++;
		return s;
	}
	return NULL;
}

static int claim_locked(struct l2cache *c, struct slot *s, uint64_t off, int state)
{
	if (!s->words) {
		void *p;

		if (posix_memalign(&p, c->align, c->table_bytes))
			return -ENOMEM;
		s->words = p;
		memset(p, 0, c->table_bytes);   /* not yet visible to anyone */
	}
	index_compact(c);
	slot_begin(s);
	atomic_store_explicit(&s->key, off, memory_order_release);
	atomic_store_explicit(&s->state, state, memory_order_release);
	atomic_store_explicit(&s->ref, true, memory_order_relaxed);
	index_put(c, off, (size_t)(s - c->slots));
	slot_end(s);
	s->dirty = false;
	s->waiters = NULL;
	return 0;
}

/* ---- lookups ---- */

/* The lock-free path: 1 hit (out filled), 0 not found or changing. */
static int try_hit(struct l2cache *c, uint64_t off, uint64_t idx, unsigned words,
		   uint64_t out[2])
{
	size_t b = bucket_of(c, off);

	for (size_t i = 0; i < c->nbuckets; i++, b = (b + 1) & (c->nbuckets - 1)) {
		uint64_t k = atomic_load_explicit(&c->hkey[b], memory_order_acquire);

		if (k == NO_KEY)
			return 0;
		if (k != off)
			continue;
		struct slot *s = &c->slots[atomic_load_explicit(&c->hslot[b],
							       memory_order_relaxed)];
		uint64_t q1 = atomic_load_explicit(&s->seq, memory_order_acquire);

		if (q1 & 1)
			return 0;
		if (atomic_load_explicit(&s->key, memory_order_acquire) != off ||
		    atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_VALID)
			return 0;
		for (unsigned w = 0; w < words; w++)
			out[w] = __builtin_bswap64(atomic_load_explicit(
				&s->words[idx * words + w], memory_order_acquire));
		/* the acquire loads keep this second sample after the copies */
		if (atomic_load_explicit(&s->seq, memory_order_relaxed) != q1)
			return 0;
		/* a plain store only when needed: no cache-line ping-pong */
		if (!atomic_load_explicit(&s->ref, memory_order_relaxed))
			atomic_store_explicit(&s->ref, true, memory_order_relaxed);
		return 1;
	}
	return 0;
}

static void park(struct l2_waiter **head, struct l2_waiter *w)
{
	w->next = *head;
	*head = w;
}

int l2c_get(struct l2cache *c, uint64_t off, uint64_t idx, unsigned words,
	    uint64_t out[2], struct l2_waiter *w, uint8_t **fill)
{
	struct slot *s;
	int ret;

	if (idx * words >= c->nwords || words > 2)
		return -EINVAL;
	for (;;) {
		if (try_hit(c, off, idx, words, out))
			return L2C_HIT;
		pthread_mutex_lock(&c->lock);
		s = find_locked(c, off);
		if (s && atomic_load_explicit(&s->state, memory_order_relaxed) == SLOT_VALID) {
			pthread_mutex_unlock(&c->lock);
			continue;        /* became valid meanwhile: read it lock-free */
		}
		if (s && !l2c_shared(c)) {   /* a fill of ours is in flight: park */
			park(&s->waiters, w);
			pthread_mutex_unlock(&c->lock);
			return L2C_WAIT;
		}
		if (s) {                 /* another thread fills it: wait for it */
			pthread_cond_wait(&c->filled, &c->lock);
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		s = victim_locked(c);
		if (!s && l2c_shared(c)) {
			pthread_mutex_unlock(&c->lock);
			sched_yield();   /* every slot busy filling or dirty */
			continue;
		}
		if (!s) {
			w->next = NULL;
			*c->starved_tail = w;
			c->starved_tail = &w->next;
			pthread_mutex_unlock(&c->lock);
			return L2C_WAIT;
		}
		if (!s->io && posix_memalign((void **)&s->io, c->align, c->table_bytes)) {
			pthread_mutex_unlock(&c->lock);
			return -ENOMEM;
		}
		ret = claim_locked(c, s, off, SLOT_FILLING);
		if (ret == 0) {
			/* The filler waits on its own slot too: it is woken
			 * before the starved, who could evict its table. */
			w->next = NULL;
			s->waiters = w;
			c->misses++;
			*fill = s->io;
		}
		pthread_mutex_unlock(&c->lock);
		return ret < 0 ? ret : L2C_FILL;
	}
}

static void wake_all(struct l2_waiter *w, int err)
{
	while (w) {
		struct l2_waiter *next = w->next;

		w->wake(w, err);
		w = next;
	}
}

void l2c_fill_done(struct l2cache *c, uint64_t off, int err)
{
	struct l2_waiter *w, *starved;
	struct slot *s;

	pthread_mutex_lock(&c->lock);
	s = find_locked(c, off);
	if (!s || atomic_load_explicit(&s->state, memory_order_relaxed) != SLOT_FILLING) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	w = s->waiters;
	s->waiters = NULL;
	if (err < 0) {
		drop_locked(c, s);
	} else {
		slot_begin(s);
		store_words(c, s, s->io);
		atomic_store_explicit(&s->state, SLOT_VALID, memory_order_release);
		slot_end(s);
	}
	/* detach before waking: wakers look tables up and may park again */
	starved = c->starved;
	c->starved = NULL;
	c->starved_tail = &c->starved;
	pthread_cond_broadcast(&c->filled);
	pthread_mutex_unlock(&c->lock);
	wake_all(w, err);
	wake_all(starved, 0);
}

/* ---- writer side ---- */

static struct slot *valid_locked(struct l2cache *c, uint64_t off)
{
	struct slot *s = find_locked(c, off);

	return s && atomic_load_explicit(&s->state, memory_order_relaxed) == SLOT_VALID
	       ? s : NULL;
}

bool l2c_resident(struct l2cache *c, uint64_t off)
{
	bool r;

	pthread_mutex_lock(&c->lock);
	r = valid_locked(c, off) != NULL;
	pthread_mutex_unlock(&c->lock);
	return r;
}

int l2c_install(struct l2cache *c, uint64_t off, const uint8_t *src)
{
	struct slot *s;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	s = find_locked(c, off);
	if (s && atomic_load_explicit(&s->state, memory_order_relaxed) == SLOT_FILLING) {
		ret = -EBUSY;
	} else {
		if (!s) {
			s = victim_locked(c);
			ret = s ? claim_locked(c, s, off, SLOT_VALID) : -EBUSY;
		}
		if (ret == 0) {
			slot_begin(s);
			store_words(c, s, src);
			atomic_store_explicit(&s->state, SLOT_VALID, memory_order_release);
			slot_end(s);
			/* dirty at once: no reader's miss may evict it first */
			if (!s->dirty) {
				s->dirty = true;
				c->ndirty++;
			}
		}
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int l2c_update(struct l2cache *c, uint64_t off, uint64_t idx, unsigned words,
	       const uint64_t v[2])
{
	struct slot *s;

	if (idx * words >= c->nwords || words > 2)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	s = valid_locked(c, off);
	if (!s) {
		pthread_mutex_unlock(&c->lock);
		return -ENOENT;
	}
	if (!s->dirty) {
		s->dirty = true;
		c->ndirty++;
	}
	slot_begin(s);
	for (unsigned w = 0; w < words; w++)
		atomic_store_explicit(&s->words[idx * words + w], __builtin_bswap64(v[w]),
				      memory_order_release);
	slot_end(s);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static void copy_words(const struct l2cache *c, const struct slot *s, uint8_t *dst)
{
	for (size_t i = 0; i < c->nwords; i++) {
		uint64_t w = atomic_load_explicit(&s->words[i], memory_order_relaxed);

		memcpy(dst + i * 8, &w, 8);
	}
}

int l2c_copy_out(struct l2cache *c, uint64_t off, uint8_t *dst)
{
	struct slot *s;

	pthread_mutex_lock(&c->lock);
	s = valid_locked(c, off);
	if (s)
		copy_words(c, s, dst);
	pthread_mutex_unlock(&c->lock);
	return s ? 0 : -ENOENT;
}

void l2c_set_dirty(struct l2cache *c, uint64_t off)
{
	struct slot *s;

	pthread_mutex_lock(&c->lock);
	s = valid_locked(c, off);
	if (s && !s->dirty) {
		s->dirty = true;
		c->ndirty++;
	}
	pthread_mutex_unlock(&c->lock);
}

void l2c_clean(struct l2cache *c, uint64_t off)
{
	struct slot *s;

	pthread_mutex_lock(&c->lock);
	s = valid_locked(c, off);
	if (s && s->dirty) {
		s->dirty = false;
		c->ndirty--;
	}
	pthread_mutex_unlock(&c->lock);
}

bool l2c_is_dirty(struct l2cache *c, uint64_t off)
{
	struct slot *s;
	bool d;

	pthread_mutex_lock(&c->lock);
	s = valid_locked(c, off);
	d = s && s->dirty;
	pthread_mutex_unlock(&c->lock);
	return d;
}

size_t l2c_dirty_count(const struct l2cache *c)
{
	return c->ndirty;
}

static int cmp_off(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int l2c_for_each_dirty(struct l2cache *c,
		       int (*fn)(void *arg, uint64_t off, uint8_t *tab), void *arg)
{
	uint64_t *offs;
	size_t n = 0;
	int ret = 0;

	if (!c->ndirty)
		return 0;
	offs = malloc(c->ndirty * sizeof(*offs));
	if (!offs)
		return -ENOMEM;
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->nslots && n < c->ndirty; i++)
		if (c->slots[i].dirty)
			offs[n++] = atomic_load_explicit(&c->slots[i].key, memory_order_relaxed);
	pthread_mutex_unlock(&c->lock);
	/* ascending offsets: the writes go out as one forward sweep */
	qsort(offs, n, sizeof(*offs), cmp_off);
	for (size_t i = 0; i < n && ret == 0; i++) {
		void *buf;

		if (posix_memalign(&buf, c->align, c->table_bytes)) {
			ret = -ENOMEM;
			break;
		}
		ret = l2c_copy_out(c, offs[i], buf);
		if (ret == 0)
			ret = fn(arg, offs[i], buf);
		else
			free(buf);
	}
	free(offs);
	return ret;
}

void l2c_invalidate(struct l2cache *c, uint64_t off)
{
	struct slot *s;

	pthread_mutex_lock(&c->lock);
	s = valid_locked(c, off);
	if (s)
		drop_locked(c, s);
	pthread_mutex_unlock(&c->lock);
}

size_t l2c_slots(const struct l2cache *c) { return c->nslots; }
uint64_t l2c_misses(const struct l2cache *c) { return c->misses; }

uint64_t l2c_evictions(struct l2cache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->evictions;
	pthread_mutex_unlock(&c->lock);
	return n;
}
