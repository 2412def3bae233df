// SPDX-License-Identifier: MIT
/* Real reference counts from the metadata walk: what a dirty (lazy
 * refcounts) image's refcounts are rebuilt from, and what amend counts
 * before it writes structures of another width. */
#include <errno.h>
#include <stdlib.h>

#include "error.h"
#include "recount.h"
#include "walk.h"

struct counter {
	uint64_t *counts;
	uint64_t n;
};

static int count_region(struct uq_walk *w, enum uq_mkind k, uint64_t off, uint64_t len)
{
	struct counter *k_ = w->arg;
	uint64_t cb = w->img->g.cluster_bits;

	for (uint64_t c = off >> cb; c <= (off + len - 1) >> cb; c++) {
		if (c >= k_->n)
			return uq_seterr(-EIO, "%s at 0x%llx lies past the end of the image",
					 uq_mkind_name(k), (unsigned long long)(c << cb));
		k_->counts[c]++;
	}
	return 0;
}

static bool count_want(struct uq_walk *w, uint32_t idx, uint64_t raw)
{
	uint64_t l2;
	bool copied;

	(void)idx;
	/* entries that don't decode stop the walk in count_l1_entry */
	return uq_l1_decode(&w->img->g, raw, &l2, &copied) < 0 || l2;
}

static int count_l1_entry(struct uq_walk *w, uint32_t idx, uint64_t raw)
{
	uint64_t l2;
	bool copied;
	int ret = uq_l1_decode(&w->img->g, raw, &l2, &copied);

	if (ret < 0)
		return uq_seterr(ret, "L1 entry %u: %s", idx, uq_errmsg());
	return 0;
}

int uq_count_refs(uq_image *img, uint64_t **counts, uint64_t *nclusters)
{
	uint64_t end = img->alloc.host_end > img->file_size ? img->alloc.host_end : img->file_size;
	struct counter k = { .n = (end + img->g.cluster_size - 1) >> img->g.cluster_bits };
	/* the refcount structures are what gets rebuilt: not counted here */
	struct uq_walk w = { .img = img, .what = UQ_WALK_SNAPSHOTS | UQ_WALK_DATA |
			     UQ_WALK_BITMAPS, .region = count_region, .want_l2 = count_want,
			     .l1_entry = count_l1_entry, .arg = &k };
	int ret;

	k.counts = calloc(k.n ? k.n : 1, sizeof(uint64_t));
	if (!k.counts)
		return -ENOMEM;
	ret = uq_walk(&w);
	if (ret < 0) {
		free(k.counts);
		return ret;
	}
	*counts = k.counts;
	*nclusters = k.n;
	return 0;
}
