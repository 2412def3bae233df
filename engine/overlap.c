// SPDX-License-Identifier: MIT
/* The set of host clusters that hold metadata, so that a write which would
 * land on one is refused (and the image marked corrupt) before it happens. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"
#include "walk.h"

#define EMPTY UINT64_MAX
#define TOMB (UINT64_MAX - 1)

static size_t slot_of(uint64_t c, size_t cap)
{
	return (size_t)((c * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

static int grow(uq_image *img)
{
	size_t ncap = img->meta.cap ? img->meta.cap * 2 : 1024;
	uint64_t *old = img->meta.slots, *m = malloc(ncap * sizeof(*m));
	size_t oldcap = img->meta.cap;

	if (!m)
		return -ENOMEM;
	for (size_t i = 0; i < ncap; i++)
		m[i] = EMPTY;
	img->meta.slots = m;
	img->meta.cap = ncap;
	img->meta.n = 0;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i] >= TOMB)
			continue;
		size_t s = slot_of(old[i], ncap);

		while (m[s] != EMPTY)
			s = (s + 1) & (ncap - 1);
		m[s] = old[i];
		img->meta.n++;
	}
	free(old);
	return 0;
}

static int add_one(uq_image *img, uint64_t c)
{
	size_t s;

	if ((img->meta.n + 1) * 2 > img->meta.cap && grow(img) < 0)
		return -ENOMEM;
	s = slot_of(c, img->meta.cap);
	while (img->meta.slots[s] != EMPTY && img->meta.slots[s] != TOMB) {
		if (img->meta.slots[s] == c)
			return 0;
		s = (s + 1) & (img->meta.cap - 1);
	}
	img->meta.slots[s] = c;
	img->meta.n++;
	return 0;
}

static bool has_one(const uq_image *img, uint64_t c)
{
	size_t s;

	if (!img->meta.cap)
		return false;
	s = slot_of(c, img->meta.cap);
	for (size_t i = 0; i < img->meta.cap && img->meta.slots[s] != EMPTY; i++) {
		if (img->meta.slots[s] == c)
			return true;
		s = (s + 1) & (img->meta.cap - 1);
	}
	return false;
}

void uq_meta_release(uq_image *img)
{
	free(img->meta.slots);
	img->meta = (struct uq_metaset){ 0 };
}

int uq_meta_add(uq_image *img, uint64_t host_off, uint64_t bytes)
{
	uint64_t cb = img->g.cluster_bits;

	for (uint64_t c = host_off >> cb; bytes && c <= (host_off + bytes - 1) >> cb; c++)
		if (add_one(img, c) < 0)
			return -ENOMEM;
	return 0;
}

void uq_meta_del(uq_image *img, uint64_t host_off, uint64_t bytes)
{
	uint64_t cb = img->g.cluster_bits;

	if (!img->meta.cap)
		return;
	for (uint64_t c = host_off >> cb; bytes && c <= (host_off + bytes - 1) >> cb; c++) {
		size_t s = slot_of(c, img->meta.cap);

		for (size_t i = 0; i < img->meta.cap && img->meta.slots[s] != EMPTY; i++) {
			if (img->meta.slots[s] == c) {
				img->meta.slots[s] = TOMB;
				break;
			}
			s = (s + 1) & (img->meta.cap - 1);
		}
	}
}

bool uq_meta_overlaps(const uq_image *img, uint64_t host_off, uint64_t bytes)
{
	uint64_t cb = img->g.cluster_bits;

	for (uint64_t c = host_off >> cb; bytes && c <= (host_off + bytes - 1) >> cb; c++)
		if (has_one(img, c))
			return true;
	return false;
}

/* Every structure the walk reaches short of guest data is metadata. */
static int build_region(struct uq_walk *w, enum uq_mkind k, uint64_t off, uint64_t len)
{
	(void)k;
	return uq_meta_add(w->img, off, len);
}

int uq_meta_build(uq_image *img)
{
	struct uq_walk w = { .img = img, .what = UQ_WALK_SNAPSHOTS | UQ_WALK_REFCOUNTS |
			     UQ_WALK_BITMAPS, .reftable = img->rc.table,
			     .reftable_n = img->rc.entries, .region = build_region,
			     .want_l2 = uq_walk_want_decoded,
			     /* an unreadable snapshot L1 table protects only itself */
			     .bad = uq_walk_skip_bad };

	return uq_walk(&w);
}
