// SPDX-License-Identifier: MIT
/* What the check knows before it counts (each cluster's use, from the
 * metadata walk; the refcount table), problem lines and progress. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "stats.h"

/* ---- messages, progress, batched table reads ---- */

void ck_msg(struct ck *ck, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!ck->res->report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	ck->res->report(ck->res->arg, line);
}

void ck_work(struct ck *ck, uint64_t n)
{
	ck->work_done += n;
	if (ck->work_done > ck->work_total)
		ck->work_total = ck->work_done;
	if (ck->res->progress)
		ck->res->progress(ck->res->arg, ck->work_done, ck->work_total);
}

/* ---- counts and the metadata map ---- */

/* Make counts and kind cover n clusters: exactly the file at first (a
 * doubling would round 16 TiB of clusters up to 32), then a quarter more
 * per step for references just past its end. */
int ck_grow(struct ck *ck, uint64_t n)
{
	uint64_t cap = ck->cap;
	uint16_t *c;
	uint8_t *k;

	if (n <= cap)
		return 0;
	cap = cap ? cap + cap / 4 + 1024 : n;
	if (cap < n)
		cap = n;
	c = realloc(ck->counts, cap * sizeof(*c));
	if (!c)
		return -ENOMEM;
	ck->counts = c;
	k = realloc(ck->kind, cap);
	if (!k)
		return -ENOMEM;
	ck->kind = k;
	memset(c + ck->cap, 0, (cap - ck->cap) * sizeof(*c));
	memset(k + ck->cap, 0, cap - ck->cap);
	ck->cap = cap;
	return 0;
}

/* ---- counts of CK_BIG and more ---- */

static size_t big_slot(const struct ck *ck, uint64_t c)
{
	uint64_t h = (c + 1) * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 20) & (ck->big_cap - 1);
}

uint64_t ck_big_get(const struct ck *ck, uint64_t c)
{
	if (!ck->big_cap)
		return CK_BIG;   /* not reached: CK_BIG in counts means an entry */
	for (size_t i = big_slot(ck, c); ck->big[i].cluster; i = (i + 1) & (ck->big_cap - 1))
		if (ck->big[i].cluster == c + 1)
			return ck->big[i].count;
	return CK_BIG;
}

static int big_put(struct ck *ck, uint64_t c, uint64_t v)
{
	size_t i;

	if (2 * (ck->nbig + 1) > ck->big_cap) {
		struct ck_big *old = ck->big;
		size_t ocap = ck->big_cap, ncap = ocap ? 2 * ocap : 64;

		ck->big = calloc(ncap, sizeof(*ck->big));
		if (!ck->big) {
			ck->big = old;
			return -ENOMEM;
		}
		ck->big_cap = ncap;
		ck->nbig = 0;
		for (size_t j = 0; j < ocap; j++)
			if (old[j].cluster)
				big_put(ck, old[j].cluster - 1, old[j].count);
		free(old);
	}
	for (i = big_slot(ck, c); ck->big[i].cluster && ck->big[i].cluster != c + 1;
	     i = (i + 1) & (ck->big_cap - 1))
		;
	if (!ck->big[i].cluster)
		ck->nbig++;
	ck->big[i] = (struct ck_big){ c + 1, v };
	return 0;
}

int ck_count_set(struct ck *ck, uint64_t c, uint64_t v)
{
	if (v < CK_BIG && ck->counts[c] < CK_BIG) {
		ck->counts[c] = (uint16_t)v;
		return 0;
	}
	/* counts only grow between clears: once big, big until then */
	ck->counts[c] = CK_BIG;
	return big_put(ck, c, v);
}

void ck_counts_clear(struct ck *ck)
{
	memset(ck->counts, 0, ck->cap * sizeof(*ck->counts));
	if (ck->big)
		memset(ck->big, 0, ck->big_cap * sizeof(*ck->big));
	ck->nbig = 0;
}

/* Record what the clusters of [off, off+size) hold; a second, different
 * use of a cluster is remembered and judged after the compare. */
int ck_mark(struct ck *ck, uint64_t off, uint64_t size, unsigned k)
{
	uint32_t cb = ck->img->g.cluster_bits;
	uint64_t first, last;

	if (!size || off >= ck->nb << cb)
		return 0;
	first = off >> cb;
	last = size - 1 > UINT64_MAX - off ? UINT64_MAX : (off + size - 1) >> cb;
	if (last >= ck->nb)
		last = ck->nb - 1;
	for (uint64_t c = first; c <= last; c++) {
		uint8_t cur = ck->kind[c], ck0 = cur & K_MASK;

		if (!ck0) {
			ck->kind[c] = (uint8_t)(cur | k);
			continue;
		}
		if (ck0 == k)
			continue;
		if (ck_kind_in_place(k) || ck_kind_in_place(ck0))
			cur |= K_INPLACE;
		if (!(cur & K_SHARED)) {
			if (ck->nov == ck->ov_cap) {
				size_t ncap = ck->ov_cap ? ck->ov_cap * 2 : 16;
				struct ck_overlap *o = realloc(ck->ov, ncap * sizeof(*o));

				if (!o)
					return -ENOMEM;
				ck->ov = o;
				ck->ov_cap = ncap;
			}
			ck->ov[ck->nov++] = (struct ck_overlap){ c, ck0, (uint8_t)k };
		}
		ck->kind[c] = cur | K_SHARED;
	}
	return 0;
}

bool ck_conflicts(const struct ck *ck, uint64_t off, uint64_t len)
{
	uint32_t cb = ck->img->g.cluster_bits;

	for (uint64_t c = off >> cb; len && c <= (off + len - 1) >> cb && c < ck->nb; c++)
		if (ck->kind[c] & K_INPLACE)
			return true;
	return false;
}

static int load_reftable(struct ck *ck)
{
	uq_image *img = ck->img;
	uint64_t n = (uint64_t)img->h.refcount_table_clusters * ck->cs / 8;

	free(ck->rt);
	ck->rt_n = 0;
	ck->far_off = 0;          /* blocks move in a rebuild */
	/* the header decoder bounded the table to 8 MiB inside the file */
	if (uq_read_table64(img, UQ_MK_REFTABLE, img->h.refcount_table_offset, n, &ck->rt) < 0) {
		ck->res->check_errors++;
		return uq_seterr(-EIO, "%s: reading the refcount table failed", img->path);
	}
	ck->rt_n = n;
	return 0;
}

/* A refcount table entry that names a block the compare can read. */
bool ck_rt_usable(const struct ck *ck, uint64_t raw, uint64_t *off)
{
	*off = raw & QCOW_REFT_OFFSET_MASK;
	return *off && !(*off & (ck->cs - 1));
}

/* The metadata map's view of the walk: every region marks its clusters. */
struct map_arg {
	struct ck *ck;
	uint64_t nl2[2];          /* L2 tables of the active state, of snapshots */
};

static int map_region(struct uq_walk *w, enum uq_mkind k, uint64_t off, uint64_t len)
{
	struct map_arg *m = w->arg;

	if (k == UQ_MK_L2)
		m->nl2[w->snap < 0 ? 0 : 1]++;
	return ck_mark(m->ck, off, len, k);
}

/* What each cluster holds apart from guest data, before anything is
 * counted: repairs refuse to write where two uses meet. */
static int meta_map(struct ck *ck, uint64_t *nl2_active, uint64_t *nl2_all)
{
	struct map_arg m = { .ck = ck };
	struct uq_walk w = { .img = ck->img, .what = UQ_WALK_SNAPSHOTS | UQ_WALK_REFCOUNTS |
				UQ_WALK_BITMAPS, .reftable = ck->rt, .reftable_n = ck->rt_n,
			     .region = map_region,
			     /* the counting walk reports what can't be read */
			     .bad = uq_walk_skip_bad, .arg = &m };
	int ret;

	memset(ck->kind, 0, ck->cap);
	ck->nov = 0;
	ret = uq_walk(&w);
	*nl2_active = m.nl2[0];
	*nl2_all = m.nl2[0] + m.nl2[1];
	if (ret < 0) {
		ck->res->check_errors++;
		return uq_seterr(ret, "out of memory mapping metadata");
	}
	return 0;
}

/* ---- setting up ---- */

void ck_free(struct ck *ck)
{
	free(ck->counts);
	free(ck->big);
	free(ck->kind);
	free(ck->rt);
	free(ck->diff);
	free(ck->ov);
	free(ck->far);
}

/* What the check allocates for this image, at most: per cluster of the
 * file a 16-bit count and a kind byte; the refcount table; the largest L1
 * table twice (read, then decoded) and its list of L2 tables (12 bytes an
 * entry); the table readers' read-ahead (8 MiB, at most 64 tables, two
 * readers at once) and one block past the file. Messages, the list of
 * wrong refcounts and counts of CK_BIG or more grow with what is found
 * wrong, not with the size: they are not in it. */
uint64_t ck_memory_need(const struct ck *ck)
{
	const uq_image *img = ck->img;
	uint64_t l1 = img->h.l1_size, ra = (8u << 20) / ck->cs;

	for (uint32_t i = 0; i < img->snap.n; i++)
		if (img->snap.list[i].raw.l1_size > l1)
			l1 = img->snap.list[i].raw.l1_size;
	ra = ra > 64 ? 64 : ra < 2 ? 2 : ra;
	return ck->cap * (sizeof(*ck->counts) + 1) + ck->rt_n * 8 + l1 * (8 + 8 + 12) +
	       2 * ra * ck->cs + ck->cs;
}

/* Counts, map and reftable for the image as it is on disk now. */
int ck_load(struct ck *ck, uint64_t *nl2_active)
{
	uq_image *img = ck->img;
	uint64_t nl2_all, size;
	int ret = io_file_size(img->file, &size);

	if (ret < 0) {
		ck->res->check_errors++;
		return uq_seterr(ret, "%s: can't get the file size", img->path);
	}
	ck->file_size = size;
	ck->nb = (size + ck->cs - 1) / ck->cs;
	/* qemu's bound too; it keeps every array below 16 GiB */
	if (ck->nb > INT32_MAX) {
		ck->res->check_errors++;
		return uq_seterr(-EFBIG, "%s: the file has too many clusters to check",
				 img->path);
	}
	if (ck_grow(ck, ck->nb ? ck->nb : 1) < 0) {
		ck->res->check_errors++;
		return -ENOMEM;
	}
	ret = load_reftable(ck);
	if (ret == 0)
		ret = meta_map(ck, nl2_active, &nl2_all);
	if (ret == 0) {
		uint64_t per = 1ull << img->g.rb_bits;

		ck->work_total = ck->work_done + nl2_all + (ck->nb + per - 1) / per + *nl2_active;
		if (ck_memory_need(ck) > ck->res->memory_need)
			ck->res->memory_need = ck_memory_need(ck);
	}
	return ret;
}

