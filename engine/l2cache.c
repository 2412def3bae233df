// SPDX-License-Identifier: MIT
/* L2 table cache for one image, driven from the thread that polls its
 * queue: a hash of slots, CLOCK eviction, misses filled by the caller. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "l2cache.h"

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_VALID };

struct slot {
	uint64_t off;
	uint8_t *buf;             /* allocated on first use */
	enum slot_state state;
	bool ref;                 /* CLOCK: used since the hand last passed */
	bool dirty;               /* changed in memory, not yet on disk */
	int32_t hnext;            /* next slot in the hash chain, -1 ends */
	struct l2_waiter *waiters;
};

struct l2cache {
	struct slot *slots;
	size_t nslots;
	int32_t *buckets;
	size_t nbuckets;          /* power of two */
	size_t hand;
	size_t table_bytes;
	size_t align;
	/* every slot was busy when these came: FIFO, so that pieces are
	 * served in request order instead of evicting each other's tables */
	struct l2_waiter *starved, **starved_tail;
	size_t ndirty;
	uint64_t hits, misses;
};

static size_t bucket_of(const struct l2cache *c, uint64_t off)
{
	/* Offsets are cluster multiples: mix the high bits down. */
	uint64_t h = off * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 32) & (c->nbuckets - 1);
}

int l2c_create(uint64_t bytes, size_t table_bytes, size_t align,
	       struct l2cache **out)
{
	struct l2cache *c;
	uint64_t n = bytes / table_bytes;

	if (n < 2)
		n = 2;
	if (n > (1u << 24))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->nslots = (size_t)n;
	c->nbuckets = 1;
	while (c->nbuckets < 2 * c->nslots)
		c->nbuckets <<= 1;
	c->slots = calloc(c->nslots, sizeof(*c->slots));
	c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
	if (!c->slots || !c->buckets) {
		l2c_destroy(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->nbuckets; i++)
		c->buckets[i] = -1;
	c->table_bytes = table_bytes;
	c->align = align < sizeof(void *) ? sizeof(void *) : align;
	*out = c;
	return 0;
}

void l2c_destroy(struct l2cache *c)
{
	if (!c)
		return;
	if (c->slots)
		for (size_t i = 0; i < c->nslots; i++)
			free(c->slots[i].buf);
	free(c->slots);
	free(c->buckets);
	free(c);
}

static struct slot *find(struct l2cache *c, uint64_t off)
{
	for (int32_t i = c->buckets[bucket_of(c, off)]; i >= 0; i = c->slots[i].hnext)
		if (c->slots[i].off == off && c->slots[i].state != SLOT_FREE)
			return &c->slots[i];
	return NULL;
}

static void unhash(struct l2cache *c, struct slot *s)
{
	int32_t *p = &c->buckets[bucket_of(c, s->off)];
	int32_t idx = (int32_t)(s - c->slots);

	while (*p >= 0 && *p != idx)
		p = &c->slots[*p].hnext;
	if (*p == idx)
		*p = s->hnext;
	s->hnext = -1;
	s->state = SLOT_FREE;
}

/* CLOCK: a slot used since the hand last passed gets a second chance.
 * Slots being filled are never taken. */
static struct slot *victim(struct l2cache *c)
{
	for (size_t step = 0; step < 2 * c->nslots; step++) {
		struct slot *s = &c->slots[c->hand];

		c->hand = (c->hand + 1) % c->nslots;
		if (s->state == SLOT_FREE)
			return s;
		if (s->state == SLOT_FILLING || s->dirty)
			continue;
		if (s->ref) {
			s->ref = false;
			continue;
		}
		unhash(c, s);
		return s;
	}
	return NULL;
}

static int claim(struct l2cache *c, struct slot *s, uint64_t off, enum slot_state st)
{
	size_t b = bucket_of(c, off);

	if (!s->buf) {
		void *p;

		if (posix_memalign(&p, c->align, c->table_bytes))
			return -ENOMEM;
		s->buf = p;
	}
	s->off = off;
	s->state = st;
	s->ref = true;
	s->dirty = false;
	s->waiters = NULL;
	s->hnext = c->buckets[b];
	c->buckets[b] = (int32_t)(s - c->slots);
	return 0;
}

int l2c_get(struct l2cache *c, uint64_t off, struct l2_waiter *w,
	    const uint8_t **tab, uint8_t **fill)
{
	struct slot *s = find(c, off);

	if (s && s->state == SLOT_VALID) {
		s->ref = true;
		c->hits++;
		*tab = s->buf;
		return L2C_HIT;
	}
	if (s) {                     /* a read for this table is in flight */
		w->next = s->waiters;
		s->waiters = w;
		return L2C_WAIT;
	}
	s = victim(c);
	if (!s) {
		w->next = NULL;
		if (!c->starved)
			c->starved_tail = &c->starved;
		*c->starved_tail = w;
		c->starved_tail = &w->next;
		return L2C_WAIT;
	}
	if (claim(c, s, off, SLOT_FILLING) < 0)
		return -ENOMEM;
	/* The filler waits on its own slot too: it must be woken before the
	 * starved ones, or they could evict the table it just read. */
	w->next = NULL;
	s->waiters = w;
	c->misses++;
	*fill = s->buf;
	return L2C_FILL;
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
	struct slot *s = find(c, off);
	struct l2_waiter *w, *starved;

	if (!s || s->state != SLOT_FILLING)
		return;
	w = s->waiters;
	s->waiters = NULL;
	if (err < 0)
		unhash(c, s);
	else
		s->state = SLOT_VALID;
	/* Detach before waking: wakers call l2c_get and may park again. */
	starved = c->starved;
	c->starved = NULL;
	c->starved_tail = &c->starved;
	wake_all(w, err);
	wake_all(starved, 0);
}

void l2c_invalidate(struct l2cache *c, uint64_t off)
{
	struct slot *s = find(c, off);

	if (s && s->state == SLOT_VALID) {
		if (s->dirty)
			c->ndirty--;
		s->dirty = false;
		unhash(c, s);
	}
}

uint8_t *l2c_peek(struct l2cache *c, uint64_t off)
{
	struct slot *s = find(c, off);

	if (!s || s->state != SLOT_VALID)
		return NULL;
	s->ref = true;
	return s->buf;
}

int l2c_install(struct l2cache *c, uint64_t off, uint8_t **buf)
{
	struct slot *s = find(c, off);

	if (s && s->state == SLOT_FILLING)
		return -EBUSY;
	if (!s) {
		s = victim(c);
		if (!s)
			return -EBUSY;
		if (claim(c, s, off, SLOT_VALID) < 0)
			return -ENOMEM;
	}
	*buf = s->buf;
	return 0;
}

void l2c_set_dirty(struct l2cache *c, uint64_t off)
{
	struct slot *s = find(c, off);

	if (s && s->state == SLOT_VALID && !s->dirty) {
		s->dirty = true;
		c->ndirty++;
	}
}

void l2c_clean(struct l2cache *c, uint64_t off)
{
	struct slot *s = find(c, off);

	if (s && s->dirty) {
		s->dirty = false;
		c->ndirty--;
	}
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
	for (size_t i = 0; i < c->nslots && n < c->ndirty; i++)
		if (c->slots[i].dirty)
			offs[n++] = c->slots[i].off;
	/* ascending offsets: the writes go out as one forward sweep */
	qsort(offs, n, sizeof(*offs), cmp_off);
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = fn(arg, offs[i], find(c, offs[i])->buf);
	free(offs);
	return ret;
}

size_t l2c_slots(const struct l2cache *c) { return c->nslots; }
uint64_t l2c_hits(const struct l2cache *c) { return c->hits; }
uint64_t l2c_misses(const struct l2cache *c) { return c->misses; }
