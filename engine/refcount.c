// SPDX-License-Identifier: MIT
/* Refcount table and blocks of every width (order 0..6), the cluster
 * allocator, deferred frees and growth of the refcount table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "error.h"
#include "header.h"
#include "internal.h"
#include "overlap.h"
#include "walk.h"
#include "stats.h"

static uint64_t cs(const uq_image *img) { return img->g.cluster_size; }

static int alloc_block_buf(const uq_image *img, uint8_t **out)
{
	void *p;

	if (posix_memalign(&p, img->align, cs(img)))
		return -ENOMEM;
	memset(p, 0, cs(img));
	*out = p;
	return 0;
}

static int resize_rb_arrays(uq_image *img, uint64_t entries)
{
	uint8_t **rb = realloc(img->rc.blocks, entries * sizeof(*rb));
	uint8_t *dirty, *ref;

	if (!rb)
		return -ENOMEM;
	img->rc.blocks = rb;
	dirty = realloc(img->rc.block_dirty, entries);
	if (!dirty)
		return -ENOMEM;
	img->rc.block_dirty = dirty;
	ref = realloc(img->rc.block_ref, entries);
	if (!ref)
		return -ENOMEM;
	img->rc.block_ref = ref;
	for (uint64_t i = img->rc.entries; i < entries; i++) {
		rb[i] = NULL;
		dirty[i] = 0;
		ref[i] = 0;
	}
	return 0;
}

/* ---- the bounded block cache ----
 *
 * At most rc.cap blocks stay in memory; CLOCK picks the one to drop. A
 * dirty block is written back when dropped, without a sync: that is safe
 * at any time because the engine only ever holds two kinds of change in
 * a block. Increases are applied before anything relies on them, so
 * writing one early can only leak. Decreases are applied only once the
 * metadata that dropped the reference is durable (deferred frees run
 * after the L2 and L1 writeback; snapshot deletion after the new snapshot
 * table), so writing one early is writing it late enough. */

static int evict_one(uq_image *img)
{
	uint64_t n = img->rc.entries;

	if (!n)
		return 0;
	if (img->rc.hand >= n)
		img->rc.hand = 0;
	for (uint64_t step = 0; step < 2 * n + 1; step++) {
		uint64_t i = img->rc.hand;
		int ret = 0;

		img->rc.hand = (i + 1) % n;
		if (!img->rc.blocks[i])
			continue;
		if (img->rc.block_ref[i]) {
			img->rc.block_ref[i] = 0;
			continue;
		}
		if (img->rc.block_dirty[i]) {
			uq_count(img->ctx, UQ_STAT_REFBLOCK_WRITEBACKS, 1);
			ret = uq_meta_pwrite(img, UQ_MK_REFBLOCK, img->rc.blocks[i], cs(img),
					     img->rc.table[i]);
			if (ret < 0)
				return uq_seterr(ret, "writing back refcount block %llu failed",
						 (unsigned long long)i);
			img->rc.block_dirty[i] = 0;
		}
		free(img->rc.blocks[i]);
		img->rc.blocks[i] = NULL;
		img->rc.nres--;
		uq_count(img->ctx, UQ_STAT_REFBLOCK_EVICTIONS, 1);
		return 0;
	}
	return 0;   /* nothing to drop: stay over the bound rather than fail */
}

/* Make buf the cached block of table index idx, making room first. */
static int install(uq_image *img, uint64_t idx, uint8_t *buf)
{
	if (img->rc.cap && img->rc.nres >= img->rc.cap) {
		int ret = evict_one(img);

		if (ret < 0) {
			free(buf);
			return ret;
		}
	}
	img->rc.blocks[idx] = buf;
	img->rc.block_ref[idx] = 1;
	img->rc.nres++;
	return 0;
}

/* A zeroed new block for idx, cached. */
static int install_new(uq_image *img, uint64_t idx)
{
	uint8_t *buf;
	int ret = alloc_block_buf(img, &buf);

	return ret < 0 ? ret : install(img, idx, buf);
}

int uq_rc_load(uq_image *img)
{
	uint64_t n = (uint64_t)img->h.refcount_table_clusters * cs(img) / 8;
	uint64_t end = img->alloc.host_end > img->file_size ? img->alloc.host_end : img->file_size;
	uint64_t *raw;
	int ret;

	img->rc.table = calloc(n ? n : 1, 8);
	if (!img->rc.table || resize_rb_arrays(img, n) < 0)
		return -ENOMEM;
	ret = uq_read_table64(img, UQ_MK_REFTABLE, img->h.refcount_table_offset, n, &raw);
	for (uint64_t i = 0; ret == 0 && i < n; i++) {
		uint64_t off;

		ret = uq_reftable_decode(&img->g, raw[i], &off);
		if (ret == 0 && off && (off < cs(img) || off >= end))
			ret = uq_seterr(-EINVAL, "refcount block at 0x%llx is outside the file",
					(unsigned long long)off);
		if (ret < 0)
			ret = uq_seterr(ret, "refcount table entry %llu: %s",
					(unsigned long long)i, uq_errmsg());
		img->rc.table[i] = off;
	}
	free(raw);
	img->rc.entries = n;
	return ret;
}

void uq_rc_release(uq_image *img)
{
	for (uint64_t i = 0; img->rc.blocks && i < img->rc.entries; i++)
		free(img->rc.blocks[i]);
	free(img->rc.blocks);
	free(img->rc.block_dirty);
	free(img->rc.block_ref);
	img->rc.block_ref = NULL;
	img->rc.nres = 0;
	img->rc.hand = 0;
	free(img->rc.table);
	free(img->rc.frees);
	img->rc.blocks = NULL;
	img->rc.block_dirty = NULL;
	img->rc.table = NULL;
	img->rc.frees = NULL;
}

/* The cached block for table index idx, loading it; NULL if none exists. */
static int block_get(uq_image *img, uint64_t idx, uint8_t **out)
{
	int ret;

	*out = NULL;
	if (idx >= img->rc.entries || !img->rc.table[idx])
		return 0;
	if (!img->rc.blocks[idx]) {
		uint8_t *buf;

		ret = alloc_block_buf(img, &buf);
		if (ret < 0)
			return ret;
		uq_count(img->ctx, UQ_STAT_REFBLOCK_LOADS, 1);
		ret = uq_meta_pread(img, UQ_MK_REFBLOCK, buf, cs(img), img->rc.table[idx]);
		if (ret < 0) {
			free(buf);
			return uq_seterr(ret, "reading refcount block %llu failed",
					 (unsigned long long)idx);
		}
		ret = install(img, idx, buf);
		if (ret < 0)
			return ret;
	} else {
		img->rc.block_ref[idx] = 1;
	}
	*out = img->rc.blocks[idx];
	return 0;
}

int uq_rc_get(uq_image *img, uint64_t cluster, uint64_t *val)
{
	uint8_t *b;
	int ret = block_get(img, cluster >> img->g.rb_bits, &b);

	*val = 0;
	if (ret < 0)
		return ret;
	if (b)
		*val = uq_refcount_get(b, img->g.refcount_order,
				       cluster & ((1ull << img->g.rb_bits) - 1));
	return 0;
}

/* Everything allocated gets written sooner or later (metadata at flush),
 * so it no longer counts as never-written once freed and reused. */
static void note_alloc(uq_image *img, uint64_t cluster, uint64_t n)
{
	uint64_t end = (cluster + n) * cs(img);

	uq_count(img->ctx, UQ_STAT_CLUSTERS_ALLOCATED, n);
	if (end > img->alloc.host_end)
		img->alloc.host_end = end;
	if (end > img->alloc.written_end)
		img->alloc.written_end = end;
}

/* First run of n clusters whose refcount is 0, from the hint on. Clusters
 * without a refcount block are free. Cluster 0 is the header, never free. */
static int find_free(uq_image *img, uint64_t n, uint64_t *first)
{
	uint64_t run = 0, start = 0;
	uint64_t c = img->alloc.free_hint ? img->alloc.free_hint : 1;
	uint64_t limit = (img->alloc.host_end / cs(img)) + n + 1;

	for (; c <= limit + n; c++) {
		uint64_t v;
		int ret = uq_rc_get(img, c, &v);

		if (ret < 0)
			return ret;
		if (v || uq_meta_overlaps(img, c * cs(img), cs(img))) {
			/* nothing below a used cluster at the hint is free */
			if (!run && c == img->alloc.free_hint)
				img->alloc.free_hint = c + 1;
			run = 0;
			continue;
		}
		if (!run++)
			start = c;
		if (run == n) {
			*first = start;
			return 0;
		}
	}
	return uq_seterr(-ENOSPC, "no free run of %llu clusters", (unsigned long long)n);
}

static int grow_table(uq_image *img, uint64_t min_entries);

/* The block must exist (it may have been dropped from the cache since it
 * was last looked at: it is loaded again). */
static int set_in_block(uq_image *img, uint64_t cluster, uint64_t v)
{
	uint64_t idx = cluster >> img->g.rb_bits;
	uint8_t *b;
	int ret = block_get(img, idx, &b);

	if (ret < 0)
		return ret;
	if (!b)
		return uq_seterr(-EIO, "refcount block %llu vanished", (unsigned long long)idx);
	uq_refcount_set(b, img->g.refcount_order, cluster & ((1ull << img->g.rb_bits) - 1), v);
	img->rc.block_dirty[idx] = 1;
	return 0;
}

/* Create the refcount block for table index idx. Its own cluster's
 * refcount lives either in itself or in a block that already exists. */
static int new_block(uq_image *img, uint64_t idx)
{
	uint64_t c, bidx;
	uint8_t *other;
	int ret;

	if (idx >= img->rc.entries) {
		ret = grow_table(img, idx + 1);
		if (ret < 0)
			return ret;
		if (img->rc.table[idx])
			return 0;   /* growth placed one here */
	}
	for (;;) {
		ret = find_free(img, 1, &c);
		if (ret < 0)
			return ret;
		bidx = c >> img->g.rb_bits;
		if (bidx == idx)
			break;
		ret = block_get(img, bidx, &other);
		if (ret < 0)
			return ret;
		if (other)
			break;
		ret = new_block(img, bidx);   /* describe c's range first */
		if (ret < 0)
			return ret;
	}
	img->rc.table[idx] = c * cs(img);
	ret = install_new(img, idx);
	if (ret < 0) {
		img->rc.table[idx] = 0;
		return ret;
	}
	img->rc.table_dirty = true;
	img->rc.block_dirty[idx] = 1;
	ret = set_in_block(img, c, 1);
	if (ret < 0)
		return ret;
	note_alloc(img, c, 1);
	return uq_meta_add(img, c * cs(img), cs(img));
}

int uq_rc_add(uq_image *img, uint64_t cluster, int64_t delta)
{
	uint64_t idx = cluster >> img->g.rb_bits, v;
	uint64_t max = uq_refcount_max(img->g.refcount_order);
	uint8_t *b;
	int ret;

	ret = block_get(img, idx, &b);
	if (ret == 0 && !b && delta > 0)
		ret = new_block(img, idx);
	if (ret < 0)
		return ret;
	ret = uq_rc_get(img, cluster, &v);
	if (ret < 0)
		return ret;
	if (delta > 0 && max - v < (uint64_t)delta)
		return uq_seterr(-ERANGE, "refcount overflow: cluster 0x%llx already has "
				 "refcount %llu, the maximum for refcount_bits=%u",
				 (unsigned long long)(cluster * cs(img)), (unsigned long long)v,
				 1u << img->g.refcount_order);
	if (delta < 0 && v < (uint64_t)-delta)
		return uq_seterr(-EIO, "refcount of cluster 0x%llx would drop below 0",
				 (unsigned long long)(cluster * cs(img)));
	ret = set_in_block(img, cluster, v + (uint64_t)delta);
	if (ret < 0)
		return ret;
	if (v + (uint64_t)delta == 0 && cluster < img->alloc.free_hint)
		img->alloc.free_hint = cluster;
	return 0;
}

int uq_rc_alloc(uq_image *img, uint64_t n, uint64_t *host_off)
{
	uint64_t c;
	int ret;

	for (;;) {
		bool ok = true;

		ret = find_free(img, n, &c);
		if (ret < 0)
			return ret;
		/* make sure blocks exist first: creating one may take a
		 * cluster of this very run */
		for (uint64_t i = 0; i < n && ret == 0; i++) {
			uint8_t *b;
			uint64_t idx = (c + i) >> img->g.rb_bits;

			ret = block_get(img, idx, &b);
			if (ret == 0 && !b)
				ret = new_block(img, idx);
		}
		if (ret < 0)
			return ret;
		for (uint64_t i = 0; i < n && ok; i++) {
			uint64_t v;

			ret = uq_rc_get(img, c + i, &v);
			if (ret < 0)
				return ret;
			ok = v == 0;
		}
		if (ok)
			break;
	}
	for (uint64_t i = 0; i < n; i++) {
		ret = set_in_block(img, c + i, 1);
		if (ret < 0)
			return ret;
	}
	if (c == img->alloc.free_hint)
		img->alloc.free_hint = c + n;
	note_alloc(img, c, n);
	*host_off = c * cs(img);
	return 0;
}

int uq_rc_free_later(uq_image *img, uint64_t host_off, uint64_t bytes)
{
	uint64_t first = host_off / cs(img);
	uint64_t last = (host_off + bytes - 1) / cs(img);

	uint64_t *run = img->rc.nfrees ? &img->rc.frees[2 * (img->rc.nfrees - 1)] : NULL;

	img->rc.free_clusters += last - first + 1;
	/* a discard frees clusters in a row: one run, not one entry each */
	if (run && run[0] + run[1] == first) {
		run[1] += last - first + 1;
		return 0;
	}
	if (img->rc.nfrees == img->rc.frees_cap) {
		size_t ncap = img->rc.frees_cap ? img->rc.frees_cap * 2 : 64;
		uint64_t *f = realloc(img->rc.frees, 2 * ncap * sizeof(*f));

		if (!f)
			return -ENOMEM;
		img->rc.frees = f;
		img->rc.frees_cap = ncap;
	}
	img->rc.frees[2 * img->rc.nfrees] = first;
	img->rc.frees[2 * img->rc.nfrees + 1] = last - first + 1;
	img->rc.nfrees++;
	return 0;
}

int uq_punch(uq_image *img, struct io_file *f, uint64_t off, uint64_t len, const char *what)
{
	struct io_req r = { .op = IO_PUNCH, .file = f, .off = off, .len = (size_t)len };
	ssize_t ret = len ? io_exec_sync(&r) : 0;

	return ret < 0 ? uq_seterr((int)ret, "%s: %s failed: %s", img->path, what,
				   strerror((int)-ret)) : 0;
}

/* Freed clusters go back to the file system: on the queue when a batch
 * is given (a flush's), else at once. */
static int punch(uq_image *img, struct uq_batch *b, uint64_t first, uint64_t n)
{
	if (b)
		return uq_batch_punch(b, img->file, first * cs(img), n * cs(img));
	return uq_punch(img, img->file, first * cs(img), n * cs(img), "releasing freed clusters");
}

/* Drop one reference to cluster c; a cluster that became free joins the
 * run being collected, or ends it (punched) and starts the next one. */
static int free_one(uq_image *img, struct uq_batch *b, uint64_t c, uint64_t *run_first,
		    uint64_t *run_n)
{
	uint64_t v;
	int ret = uq_rc_add(img, c, -1);

	if (ret == 0)
		ret = uq_rc_get(img, c, &v);
	if (ret || v)
		return ret;
	uq_meta_del(img, c * cs(img), cs(img));
	uq_count(img->ctx, UQ_STAT_CLUSTERS_FREED, 1);
	if (*run_n && c == *run_first + *run_n) {
		(*run_n)++;
		return 0;
	}
	ret = punch(img, b, *run_first, *run_n);
	*run_first = c;
	*run_n = 1;
	return ret;
}

static int run_cmp(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sort the runs and join those that touch, so that frees from many L2
 * tables become one punch per stretch of the file. A cluster freed twice
 * (a snapshot's reference and ours) stays in two runs: two decrements. */
static void merge_runs(uq_image *img)
{
	uint64_t *f = img->rc.frees;
	size_t n = 0;

	if (img->rc.nfrees < 2)
		return;   /* and f may be NULL, which qsort must not get */
	qsort(f, img->rc.nfrees, 2 * sizeof(*f), run_cmp);
	for (size_t i = 0; i < img->rc.nfrees; i++) {
		if (n && f[2 * (n - 1)] + f[2 * (n - 1) + 1] == f[2 * i]) {
			f[2 * (n - 1) + 1] += f[2 * i + 1];
			continue;
		}
		f[2 * n] = f[2 * i];
		f[2 * n + 1] = f[2 * i + 1];
		n++;
	}
	img->rc.nfrees = n;
}

int uq_rc_apply_frees(uq_image *img, struct uq_batch *b)
{
	uint64_t run_first = 0, run_n = 0;
	int ret = 0;

	/* runs once the L2 tables that dropped these clusters are on disk */
	merge_runs(img);
	for (size_t i = 0; i < img->rc.nfrees && ret == 0; i++)
		for (uint64_t k = 0; k < img->rc.frees[2 * i + 1] && ret == 0; k++)
			ret = free_one(img, b, img->rc.frees[2 * i] + k, &run_first, &run_n);
	if (ret == 0)
		ret = punch(img, b, run_first, run_n);
	img->rc.nfrees = 0;
	img->rc.free_clusters = 0;
	return ret;
}

static int write_table(uq_image *img, uint64_t off, const uint64_t *t, uint64_t n)
{
	return uq_write_table64(img, UQ_MK_REFTABLE, off, t, n, n * 8);
}

int uq_rc_queue_dirty(uq_image *img, struct uq_batch *b)
{
	int ret = 0;

	for (uint64_t i = 0; i < img->rc.entries && ret == 0; i++) {
		if (!img->rc.block_dirty[i])
			continue;
		uq_count(img->ctx, UQ_STAT_REFBLOCK_WRITEBACKS, 1);
		ret = uq_batch_write(b, UQ_MK_REFBLOCK, img->rc.blocks[i], cs(img),
				     img->rc.table[i], NULL);
		img->rc.block_dirty[i] = 0;
	}
	return ret;
}

int uq_rc_queue_table(uq_image *img, struct uq_batch *b)
{
	if (!img->rc.table_dirty)
		return 0;
	img->rc.table_dirty = false;
	return uq_batch_write64(b, UQ_MK_REFTABLE, img->h.refcount_table_offset, img->rc.table,
				img->rc.entries, img->rc.entries * 8);
}

int uq_rc_write_dirty(uq_image *img)
{
	int ret = 0;

	for (uint64_t i = 0; i < img->rc.entries && ret == 0; i++) {
		if (!img->rc.block_dirty[i])
			continue;
		uq_count(img->ctx, UQ_STAT_REFBLOCK_WRITEBACKS, 1);
		ret = uq_meta_pwrite(img, UQ_MK_REFBLOCK, img->rc.blocks[i], cs(img),
				     img->rc.table[i]);
		img->rc.block_dirty[i] = 0;
	}
	if (ret == 0 && img->rc.table_dirty) {
		/* new blocks must be durable before the table points at them */
		ret = io_fsync(img->file);
		if (ret == 0)
			ret = write_table(img, img->h.refcount_table_offset, img->rc.table,
					  img->rc.entries);
		img->rc.table_dirty = false;
	}
	if (ret < 0)
		uq_seterr(ret, "writing refcounts failed");
	return ret;
}

/* Switch the header to a new refcount table (and width): the fields from
 * byte 48 to refcount_order go out in one write (one sector), after
 * everything they name is durable. */
static int switch_table(uq_image *img, uint64_t off, uint32_t clusters, uint32_t order)
{
	struct uq_header h = img->h;
	size_t end = h.version >= 3 ? QCOW_HDR_HEADER_LENGTH : QCOW_HDR_NB_SNAPSHOTS;
	size_t blen = h.header_length > QCOW_V3_HEADER_LEN_CT ? h.header_length
							      : QCOW_V3_HEADER_LEN_CT;
	uint8_t *buf = malloc(blen);
	int ret;

	if (!buf)
		return -ENOMEM;
	h.refcount_table_offset = off;
	h.refcount_table_clusters = clusters;
	h.refcount_order = order;
	ret = uq_header_encode(&h, buf, blen);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret == 0)
		ret = uq_header_write_field(img, QCOW_HDR_REFCOUNT_TABLE, buf + QCOW_HDR_REFCOUNT_TABLE,
					    end - QCOW_HDR_REFCOUNT_TABLE);
	if (ret == 0)
		ret = io_fsync(img->file);
	free(buf);
	return ret;
}

/* Blocks needed to describe clusters [first, end) that don't exist yet,
 * given a table of n entries. */
static uint64_t missing_blocks(const uq_image *img, uint64_t first, uint64_t end)
{
	uint64_t need = 0;

	for (uint64_t idx = first >> img->g.rb_bits; idx <= (end - 1) >> img->g.rb_bits; idx++)
		if (idx >= img->rc.entries || !img->rc.table[idx])
			need++;
	return need;
}

/* A larger table at the end of the file, with the blocks that describe it
 * right after it; the old table is freed once the header points away. */
static int grow_table(uq_image *img, uint64_t min_entries)
{
	uint64_t per = cs(img) / 8, old_n = img->rc.entries;
	uint64_t n = old_n * 2 > min_entries ? old_n * 2 : min_entries;
	uint64_t T, tc, nb = 0, *nt;
	uint64_t old_off = img->h.refcount_table_offset;
	uint32_t old_clusters = img->h.refcount_table_clusters;
	int ret;

	n = (n + per - 1) / per * per;
	if (n * 8 > QCOW_MAX_REFTABLE_BYTES) {
		n = QCOW_MAX_REFTABLE_BYTES / 8;
		if (n < min_entries)
			return uq_seterr(-EFBIG, "refcount table would exceed 8 MiB");
	}
	tc = n / per;
	T = (img->alloc.host_end + cs(img) - 1) / cs(img);
	for (;;) {
		uint64_t need = missing_blocks(img, T, T + tc + nb);

		if (need == nb)
			break;
		nb = need;
	}
	nt = calloc(n, 8);
	if (!nt)
		return -ENOMEM;
	memcpy(nt, img->rc.table, old_n * 8);
	ret = resize_rb_arrays(img, n);
	if (ret < 0) {
		free(nt);
		return ret;
	}
	free(img->rc.table);
	img->rc.table = nt;
	img->rc.entries = n;
	/* place the new blocks after the table, in index order */
	uint64_t next = T + tc;

	for (uint64_t idx = T >> img->g.rb_bits;
	     idx <= (T + tc + nb - 1) >> img->g.rb_bits; idx++) {
		if (nt[idx])
			continue;
		nt[idx] = next++ * cs(img);
		ret = install_new(img, idx);
		if (ret < 0) {
			nt[idx] = 0;
			return ret;
		}
		img->rc.block_dirty[idx] = 1;
	}
	for (uint64_t c = T; c < T + tc + nb; c++) {
		ret = set_in_block(img, c, 1);
		if (ret < 0)
			return ret;
	}
	note_alloc(img, T, tc + nb);
	ret = uq_meta_add(img, T * cs(img), (tc + nb) * cs(img));
	/* blocks, then the table, then the header that names them */
	img->rc.table_dirty = false;
	for (uint64_t i = 0; ret == 0 && i < n; i++) {
		if (!img->rc.block_dirty[i])
			continue;
		uq_count(img->ctx, UQ_STAT_REFBLOCK_WRITEBACKS, 1);
		ret = uq_meta_pwrite(img, UQ_MK_REFBLOCK, img->rc.blocks[i], cs(img), nt[i]);
		img->rc.block_dirty[i] = 0;
	}
	if (ret == 0)
		ret = write_table(img, T * cs(img), nt, n);
	if (ret == 0)
		ret = switch_table(img, T * cs(img), (uint32_t)tc, img->h.refcount_order);
	if (ret < 0) {
		/* the header may name the new table already: write no more */
		uq_stop_writes(img, "growing the refcount table failed");
		return uq_seterr(ret, "growing the refcount table failed");
	}
	img->h.refcount_table_offset = T * cs(img);
	img->h.refcount_table_clusters = (uint32_t)tc;
	uq_meta_del(img, old_off, (uint64_t)old_clusters * cs(img));
	return uq_rc_free_later(img, old_off, (uint64_t)old_clusters * cs(img));
}

/* Fresh refcount structures of width 1 << order at the end of the file,
 * holding counts[] plus their own clusters; then the header switch. The
 * old structures are dropped, not freed: callers recount or accept the
 * leak (rebuilding is only needed when the old ones can't be trusted). */
int uq_rc_rebuild(uq_image *img, const uint64_t *counts, uint64_t nclusters,
		  uint32_t order)
{
	uint64_t c = cs(img), per = c / 8;
	uint32_t rb_bits = img->g.cluster_bits + 3 - order;
	uint64_t max = uq_refcount_max(order);
	uint64_t T = (img->alloc.host_end + c - 1) / c;
	uint64_t tc = 1, nb = 0, n, end;
	uint8_t *blk = NULL;
	uint64_t *table = NULL;
	int ret = 0;

	if (T < nclusters)
		T = nclusters;
	/* whatever happens below, these clusters are no longer never-written */
	/* size table and blocks so that they also describe themselves */
	for (int iter = 0; iter < 64; iter++) {
		end = T + tc + nb;
		uint64_t nb2 = (end + (1ull << rb_bits) - 1) >> rb_bits;
		uint64_t tc2 = (nb2 + per - 1) / per;

		if (nb2 == nb && tc2 == tc)
			break;
		nb = nb2;
		tc = tc2;
	}
	n = tc * per;
	if (n * 8 > QCOW_MAX_REFTABLE_BYTES)
		return uq_seterr(-EFBIG, "refcount table would exceed 8 MiB");
	if (img->alloc.written_end < (T + tc + nb) * c)
		img->alloc.written_end = (T + tc + nb) * c;
	for (uint64_t i = 0; i < nclusters; i++)
		if (counts[i] > max)
			return uq_seterr(-ERANGE, "cluster 0x%llx has refcount %llu, more than "
					 "refcount_bits=%u can hold", (unsigned long long)(i * c),
					 (unsigned long long)counts[i], 1u << order);
	table = calloc(n, 8);
	if (!table || alloc_block_buf(img, &blk) < 0) {
		ret = -ENOMEM;
		goto out;
	}
	/* blocks go at [T + tc, T + tc + nb), block i covers clusters i << rb_bits */
	for (uint64_t i = 0; i < nb && ret == 0; i++) {
		uint64_t base = i << rb_bits;

		memset(blk, 0, c);
		for (uint64_t j = 0; j < (1ull << rb_bits); j++) {
			uint64_t cl = base + j, v = cl < nclusters ? counts[cl] : 0;

			if (cl >= T && cl < T + tc + nb)
				v = 1;
			if (v)
				uq_refcount_set(blk, order, j, v);
		}
		table[i] = (T + tc + i) * c;
		ret = uq_meta_pwrite(img, UQ_MK_REFBLOCK, blk, c, table[i]);
	}
	if (ret == 0)
		ret = write_table(img, T * c, table, n);
	if (ret == 0)
		ret = switch_table(img, T * c, (uint32_t)tc, order);
	if (ret < 0) {
		/* the header may name the new structures already: write no more */
		uq_stop_writes(img, "rebuilding the refcounts failed");
		uq_seterr(ret, "rebuilding refcounts failed");
		goto out;
	}
	/* the new structures are live: reload them */
	uq_meta_del(img, img->h.refcount_table_offset,
		    (uint64_t)img->h.refcount_table_clusters * c);
	for (uint64_t i = 0; i < img->rc.entries; i++)
		if (img->rc.table[i])
			uq_meta_del(img, img->rc.table[i], c);
	uq_rc_release(img);
	img->rc.entries = 0;
	img->h.refcount_table_offset = T * c;
	img->h.refcount_table_clusters = (uint32_t)tc;
	img->h.refcount_order = order;
	img->g.refcount_order = order;
	img->g.rb_bits = rb_bits;
	img->alloc.host_end = (T + tc + nb) * c;
	if (img->alloc.written_end < img->alloc.host_end)
		img->alloc.written_end = img->alloc.host_end;
	img->alloc.free_hint = 1;
	img->rc.nfrees = img->rc.frees_cap = 0;
	img->rc.free_clusters = 0;
	ret = uq_rc_load(img);
	if (ret == 0)
		ret = uq_meta_add(img, T * c, (tc + nb) * c);
out:
	free(blk);
	free(table);
	return ret;
}
