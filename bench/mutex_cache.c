// SPDX-License-Identifier: MIT
/* The mutex-protected L2 cache baseline: chained hash of table slots and a
 * CLOCK hand, every lookup under one lock, as a first cache would be. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "mutex_cache.h"

struct mslot {
	uint64_t off;
	uint8_t *buf;
	bool used;
	bool ref;                 /* CLOCK: looked up since the hand passed */
	int32_t next;             /* hash chain, -1 ends */
};

struct mcache {
	pthread_mutex_t lock;
	struct mslot *slots;
	size_t nslots;
	int32_t *buckets;
	size_t nbuckets;          /* power of two */
	size_t hand;
	size_t table_bytes;
};

static size_t bucket_of(const struct mcache *c, uint64_t off)
{
	return (size_t)((off * 0x9e3779b97f4a7c15ull) >> 32) & (c->nbuckets - 1);
}

int mc_create(uint64_t bytes, size_t table_bytes, struct mcache **out)
{
	struct mcache *c = calloc(1, sizeof(*c));
	size_t n = (size_t)(bytes / table_bytes);

	if (!c)
		return -ENOMEM;
	c->nslots = n < 2 ? 2 : n;
	c->nbuckets = 1;
	while (c->nbuckets < 2 * c->nslots)
		c->nbuckets <<= 1;
	c->table_bytes = table_bytes;
	c->slots = calloc(c->nslots, sizeof(*c->slots));
	c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
	if (!c->slots || !c->buckets) {
		mc_destroy(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->nbuckets; i++)
		c->buckets[i] = -1;
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

void mc_destroy(struct mcache *c)
{
	if (!c)
		return;
	for (size_t i = 0; c->slots && i < c->nslots; i++)
		free(c->slots[i].buf);
	free(c->slots);
	free(c->buckets);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static int32_t find(const struct mcache *c, uint64_t off)
{
	int32_t i = c->buckets[bucket_of(c, off)];

	while (i >= 0 && c->slots[i].off != off)
		i = c->slots[i].next;
	return i;
}

static void unlink_slot(struct mcache *c, int32_t s)
{
	int32_t *p = &c->buckets[bucket_of(c, c->slots[s].off)];

	while (*p != s)
		p = &c->slots[*p].next;
	*p = c->slots[s].next;
}

int mc_install(struct mcache *c, uint64_t off, const uint8_t *src)
{
	struct mslot *s;
	int32_t i;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	i = find(c, off);
	if (i < 0) {
		/* CLOCK: skip slots looked up since the last pass */
		for (;;) {
			s = &c->slots[c->hand];
			i = (int32_t)c->hand;
			c->hand = (c->hand + 1) % c->nslots;
			if (!s->used || !s->ref)
				break;
			s->ref = false;
		}
		if (s->used)
			unlink_slot(c, i);
		if (!s->buf && !(s->buf = malloc(c->table_bytes))) {
			s->used = false;
			ret = -ENOMEM;
			goto out;
		}
		s->off = off;
		s->used = true;
		s->next = c->buckets[bucket_of(c, off)];
		c->buckets[bucket_of(c, off)] = i;
	}
	memcpy(c->slots[i].buf, src, c->table_bytes);
out:
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int mc_get(struct mcache *c, uint64_t off, uint64_t idx, unsigned words,
	   uint64_t out[2])
{
	int32_t i;

	pthread_mutex_lock(&c->lock);
	i = find(c, off);
	if (i >= 0) {
		const uint8_t *e = c->slots[i].buf + idx * words * 8;

		c->slots[i].ref = true;
		out[0] = uq_be64(e);
		if (words > 1)
			out[1] = uq_be64(e + 8);
	}
	pthread_mutex_unlock(&c->lock);
	return i >= 0 ? 0 : -ENOENT;
}
