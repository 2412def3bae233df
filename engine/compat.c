// SPDX-License-Identifier: MIT
/* Changing an image's compatibility level in place (amend compat=): v3 to
 * v2 expands zero clusters, then rewrites the header in v2's layout; v2 to
 * v3 gives snapshots v3's extra data, then rewrites the header. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "error.h"
#include "header.h"
#include "internal.h"
#include "overlap.h"
#include "snapshot.h"
#include "stats.h"
#include "walk.h"

/* The header switch is one write of this many bytes at offset 0: one
 * sector, which a crash leaves all old or all new. */
#define HDR_SECTOR 512u

static uint64_t cs(const uq_image *img) { return img->g.cluster_size; }
static uint64_t round8(uint64_t v) { return (v + 7) & ~7ull; }

static void progress(const struct uq_progress *p, uint64_t done, uint64_t total)
{
	if (p && p->fn)
		p->fn(p->arg, done, total);
}

/* ---- the header in another layout ---- */

/*
 * Lay out the first cluster for header nh, from the current one (old):
 * the extensions are copied as they are (unknown ones too), except that
 * v2 drops the feature name table (v2 has no feature bits to name), and
 * v3 gains ours when the image has none and it fits. Header and
 * extensions must fit in the first sector. The backing file name follows
 * them when it fits there too; otherwise it goes past every byte the old
 * header uses, so that it can be written before the switch.
 */
static int build_header(uq_image *img, const uint8_t *old, struct uq_header *nh,
			uint8_t *buf)
{
	uint64_t c = cs(img), pos, opos = img->h.header_length, old_end;
	/* a size without an offset names no backing file (qemu ignores it) */
	uint32_t name_len = img->h.backing_file_offset ? img->h.backing_file_size : 0;
	bool has_features = false;

	memset(buf, 0, c);
	pos = nh->version == 2 ? QCOW_V2_HEADER_LEN : nh->header_length;
	while (opos + 8 <= c) {
		uint32_t type = uq_be32(old + opos), len = uq_be32(old + opos + 4);
		uint64_t rec = 8 + round8(len);

		if (type == QCOW_EXT_END)
			break;
		if (opos + rec > c)
			return uq_seterr(-EINVAL, "%s: header extension 0x%08x runs past "
					 "the first cluster", img->path, type);
		opos += rec;
		if (type == QCOW_EXT_FEATURES) {
			if (nh->version == 2)
				continue;
			has_features = true;
		}
		if (pos + rec + 8 > HDR_SECTOR)
			return uq_seterr(-ENOTSUP, "%s: the header extensions don't fit in "
					 "one sector; can't rewrite the header atomically",
					 img->path);
		memcpy(buf + pos, old + opos - rec, rec);
		pos += rec;
	}
	if (nh->version >= 3 && !has_features) {
		size_t n = uq_feature_table_ext(NULL);

		if (pos + n + 8 <= HDR_SECTOR)
			pos += uq_feature_table_ext(buf + pos);
	}
	pos += 8;   /* the end marker: zeros */
	old_end = img->exts ? img->exts->end : opos + 8;
	if (name_len && img->h.backing_file_offset + name_len > old_end)
		old_end = img->h.backing_file_offset + name_len;
	nh->backing_file_offset = 0;
	nh->backing_file_size = name_len;
	if (name_len) {
		uint64_t at = pos;

		if (pos + name_len > HDR_SECTOR)
			at = round8(pos > old_end ? pos : old_end);
		if (at + name_len > c)
			return uq_seterr(-ENOSPC, "%s: no room for the backing file name in "
					 "the new header", img->path);
		memcpy(buf + at, old + img->h.backing_file_offset, name_len);
		nh->backing_file_offset = at;
	}
	return uq_header_encode(nh, buf, c);
}

/* Everything before is durable; then the name if it lies outside the
 * first sector (past what the old header uses), then the one sector. */
static int switch_header(uq_image *img, const struct uq_header *nh, const uint8_t *buf)
{
	int ret = io_fsync(img->file);

	if (ret == 0 && nh->backing_file_size && nh->backing_file_offset >= HDR_SECTOR) {
		ret = uq_meta_pwrite(img, UQ_MK_HEADER, buf + nh->backing_file_offset,
				     nh->backing_file_size, nh->backing_file_offset);
		if (ret == 0)
			ret = io_fsync(img->file);
	}
	if (ret == 0)
		ret = uq_meta_pwrite(img, UQ_MK_HEADER, buf, HDR_SECTOR, 0);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0) {
		uq_stop_writes(img, "a header rewrite failed");
		return uq_seterr(ret, "%s: writing the new header failed: %s", img->path,
				 strerror(-ret));
	}
	return 0;
}

/* The image in memory follows the header now on disk. */
static int adopt_header(uq_image *img, const struct uq_header *nh, const uint8_t *buf)
{
	int ret;

	img->h = *nh;
	uq_geom_init(&img->h, &img->g);
	img->rc.lazy = img->h.compatible_features & QCOW_COMPAT_LAZY_REFCOUNTS;
	ret = uq_exts_decode(buf, cs(img), &img->h, img->exts);
	if (ret < 0)
		uq_stop_writes(img, "the rewritten header does not read back");
	return ret;
}

static int rewrite_header(uq_image *img, struct uq_header *nh)
{
	uint8_t *old = malloc(cs(img)), *buf = malloc(cs(img));
	int ret = -ENOMEM;

	if (old && buf)
		ret = uq_meta_pread(img, UQ_MK_HEADER, old, cs(img), 0);
	if (ret == 0)
		ret = build_header(img, old, nh, buf);
	if (ret == 0)
		ret = switch_header(img, nh, buf);
	if (ret == 0)
		ret = adopt_header(img, nh, buf);
	free(old);
	free(buf);
	return ret;
}

/* ---- every L2 table, once ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int add_l1(uq_image *img, const uint64_t *l1, uint32_t n, uint64_t **v, size_t *nv)
{
	uint64_t *t = realloc(*v, (*nv + n + 1) * sizeof(**v));

	if (!t)
		return -ENOMEM;
	*v = t;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t off;
		bool copied;
		int ret = uq_l1_decode(&img->g, l1[i], &off, &copied);

		if (ret < 0)
			return ret;
		if (off)
			t[(*nv)++] = off;
	}
	return 0;
}

/* The L2 tables of the active state and of every snapshot, sorted, each
 * once (snapshots share tables with the active state and each other). */
static int all_l2_tables(uq_image *img, uint64_t **out, size_t *nout)
{
	uint64_t *v = NULL;
	size_t n = 0, u = 0;
	int ret = add_l1(img, img->l1, img->h.l1_size, &v, &n);

	for (uint32_t s = 0; ret == 0 && s < img->snap.n; s++) {
		const struct uq_snapshot_raw *r = &img->snap.list[s].raw;
		uint64_t *l1 = NULL;

		if (!r->l1_size)
			continue;
		ret = uq_read_table64(img, UQ_MK_L1, r->l1_table_offset, r->l1_size, &l1);
		if (ret == 0)
			ret = add_l1(img, l1, r->l1_size, &v, &n);
		free(l1);
	}
	if (ret < 0) {
		free(v);
		return ret;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_u64);
	for (size_t i = 0; i < n; i++)
		if (!u || v[u - 1] != v[i])
			v[u++] = v[i];
	*out = v;
	*nout = u;
	return 0;
}

/* Does any L2 table hold a compressed cluster? */
static int any_compressed(uq_image *img, const uint64_t *tabs, size_t n, bool *yes)
{
	uint64_t entries = cs(img) / 8;
	int ret = 0;

	*yes = false;
	for (size_t i = 0; i < n && ret == 0 && !*yes; i++) {
		uint64_t *t = NULL;

		ret = uq_read_table64(img, UQ_MK_L2, tabs[i], entries, &t);
		for (uint64_t j = 0; ret == 0 && j < entries; j++)
			if (t[j] & QCOW_OFLAG_COMPRESSED)
				*yes = true;
		free(t);
	}
	return ret;
}

/* ---- zero clusters become data or holes ---- */

/*
 * One L2 table without zero flags. A data cluster's refcount counts one
 * reference per L1 table reaching it, so a table with refcount r gives
 * each cluster it names r references. An entry that reads zeros keeps
 * doing so in v2:
 * - its cluster is allocated and no other table refers to it (refcount
 *   <= the table's): the cluster is zeroed in place, the flag dropped;
 * - otherwise, without a backing file: the entry becomes unallocated
 *   (reads zeros), and a shared cluster loses this table's references;
 * - otherwise (a backing file would show through): a new zeroed cluster,
 *   with one reference per reference to the table.
 * A shared cluster is never zeroed in place: another table (a snapshot's)
 * may read it as data. The order is data, refcount increases, the table,
 * then the decreases, each durable before the next.
 */
static int expand_table(uq_image *img, uint64_t l2_off, const uint8_t *zeros)
{
	uint64_t entries = cs(img) / 8, *t = NULL, l2rc = 0;
	bool backed = img->h.backing_file_offset && img->h.backing_file_size,
	     changed = false;
	int ret = uq_read_table64(img, UQ_MK_L2, l2_off, entries, &t);

	if (ret == 0)
		ret = uq_rc_get(img, uq_cluster_of(img, l2_off), &l2rc);
	for (uint64_t i = 0; ret == 0 && i < entries; i++) {
		struct uq_l2map m;
		uint64_t rc = 0, off;

		ret = uq_l2_decode(&img->g, t[i], 0, &m);
		if (ret < 0 || m.type != UQ_C_ZERO)
			continue;
		changed = true;
		if (m.host_off)
			ret = uq_rc_get(img, uq_cluster_of(img, m.host_off), &rc);
		if (ret == 0 && m.host_off && rc <= l2rc) {
			if (uq_meta_overlaps(img, m.host_off, cs(img)))
				ret = uq_mark_corrupt(img, "zeros", m.host_off);
			if (ret == 0)
				ret = uq_meta_pwrite(img, UQ_MK_DATA, zeros, cs(img), m.host_off);
			t[i] &= ~(QCOW_OFLAG_ZERO | QCOW_OFLAG_COPIED);
			t[i] |= rc == 1 ? QCOW_OFLAG_COPIED : 0;
			continue;
		}
		/* the references this table's readers held go */
		for (uint64_t k = 0; ret == 0 && m.host_off && k < l2rc; k++)
			ret = uq_rc_free_later(img, m.host_off, cs(img));
		if (ret < 0 || !backed) {
			t[i] = 0;
			continue;
		}
		ret = uq_rc_alloc(img, 1, &off);
		if (ret == 0 && l2rc > 1)
			ret = uq_rc_add(img, uq_cluster_of(img, off), (int64_t)(l2rc - 1));
		if (ret == 0 && uq_meta_overlaps(img, off, cs(img)))
			ret = uq_mark_corrupt(img, "zeros", off);
		if (ret == 0)
			ret = uq_meta_pwrite(img, UQ_MK_DATA, zeros, cs(img), off);
		t[i] = off | (l2rc == 1 ? QCOW_OFLAG_COPIED : 0);
	}
	if (ret == 0 && changed) {
		ret = io_fsync(img->file);
		if (ret == 0)
			ret = uq_rc_write_dirty(img);
		if (ret == 0)
			ret = io_fsync(img->file);
		if (ret == 0)
			ret = uq_write_table64(img, UQ_MK_L2, l2_off, t, entries, cs(img));
		if (ret == 0)
			ret = io_fsync(img->file);
		l2c_invalidate(img->l2c, l2_off);
		if (ret == 0)
			ret = uq_rc_apply_frees(img, NULL);
		if (ret == 0)
			ret = uq_rc_write_dirty(img);
	}
	free(t);
	return ret;
}

/* ---- the two directions ---- */

int uq_compat_check_downgrade(uq_image *img, uint32_t refcount_bits)
{
	uint64_t other = img->h.incompatible_features &
			 ~(QCOW_INCOMPAT_DIRTY | QCOW_INCOMPAT_COMPRESSION);
	uint64_t *tabs = NULL;
	size_t n = 0;
	bool comp = false;
	int ret;

	if (refcount_bits != 16)
		return uq_seterr(-ENOTSUP, "compat=0.10 requires refcount_bits=16");
	if (img->h.incompatible_features & QCOW_INCOMPAT_DATA_FILE)
		return uq_seterr(-ENOTSUP, "Cannot downgrade an image with a data file");
	if (other)
		return uq_seterr(-ENOTSUP, "Cannot downgrade an image with incompatible "
				 "features 0x%llx set", (unsigned long long)other);
	if (img->h.compression_type == QCOW_COMPRESS_ZLIB)
		return 0;
	ret = uq_meta_flush(img);
	if (ret == 0)
		ret = all_l2_tables(img, &tabs, &n);
	if (ret == 0)
		ret = any_compressed(img, tabs, n, &comp);
	free(tabs);
	if (ret == 0 && comp)
		ret = uq_seterr(-ENOTSUP, "Cannot downgrade an image with zstd compression "
				"type and existing compressed clusters");
	return ret;
}

int uq_compat_downgrade(uq_image *img, const struct uq_progress *p)
{
	struct uq_header nh = img->h;
	uint64_t *tabs = NULL;
	uint8_t *zeros = NULL;
	size_t n = 0;
	int ret = uq_compat_check_downgrade(img, 1u << img->h.refcount_order);

	if (ret < 0)
		return ret;
	/* a clean image first: the refcounts lazy mode held back */
	ret = uq_meta_flush(img);
	if (ret == 0 && img->rc.lazy) {
		ret = uq_rc_write_dirty(img);
		if (ret == 0)
			ret = io_fsync(img->file);
		if (ret == 0)
			ret = uq_header_set_dirty(img, false);
		img->rc.lazy = false;
	}
	if (ret == 0)
		ret = all_l2_tables(img, &tabs, &n);
	zeros = calloc(1, cs(img));
	if (ret == 0 && !zeros)
		ret = -ENOMEM;
	progress(p, 0, n + 1);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		ret = expand_table(img, tabs[i], zeros);
		progress(p, i + 1, n + 1);
	}
	free(tabs);
	free(zeros);
	/* a shared cluster that lost a reference may now have refcount 1:
	 * COPIED follows (a crash before this only costs a needless COW) */
	if (ret == 0)
		ret = uq_snap_fix_copied(img);
	if (ret < 0)
		return uq_seterr(ret, "%s: Failed to turn zero into data clusters: %s",
				 img->path, uq_errmsg());
	nh.version = 2;
	nh.header_length = QCOW_V2_HEADER_LEN;
	nh.incompatible_features = 0;
	nh.compatible_features = 0;
	nh.autoclear_features = 0;
	nh.compression_type = QCOW_COMPRESS_ZLIB;
	ret = rewrite_header(img, &nh);
	progress(p, n + 1, n + 1);
	return ret;
}

int uq_compat_upgrade(uq_image *img, const struct uq_progress *p)
{
	struct uq_header nh;
	int ret = uq_meta_flush(img);

	progress(p, 0, 2);
	/* v3 requires each snapshot's 64-bit VM state size and disk size */
	if (ret == 0)
		ret = uq_snaps_to_v3(img);
	progress(p, 1, 2);
	if (ret < 0)
		return ret;
	nh = img->h;
	nh.version = 3;
	nh.header_length = QCOW_V3_HEADER_LEN_CT;
	nh.refcount_order = 4;
	nh.incompatible_features = 0;
	nh.compatible_features = 0;
	nh.autoclear_features = 0;
	nh.compression_type = QCOW_COMPRESS_ZLIB;
	ret = rewrite_header(img, &nh);
	progress(p, 2, 2);
	return ret;
}
