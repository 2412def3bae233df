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

/* Make counts and kind cover n clusters. */
int ck_grow(struct ck *ck, uint64_t n)
{
	uint64_t cap = ck->cap;
	uint64_t *c;
	uint8_t *k;

	if (n <= cap)
		return 0;
	while (cap < n)
		cap = cap ? cap * 2 : 1024;
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
	free(ck->kind);
	free(ck->rt);
	free(ck->diff);
	free(ck->ov);
	free(ck->far);
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
	}
	return ret;
}

