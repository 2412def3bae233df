// SPDX-License-Identifier: MIT
/* Internal snapshots: the snapshot table (loaded on open, replaced whole),
 * create, apply (revert to), delete, and read-only views of a snapshot's
 * disk. Ordered so that a crash only ever leaks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "header.h"
#include "overlap.h"
#include "snapshot.h"
#include "walk.h"
#include "stats.h"

#define MAX_NAME 1023u    /* what uq_snapshot_info can hand back whole */

static uint64_t cs(const uq_image *img) { return img->g.cluster_size; }

static uint64_t clusters_for(const uq_image *img, uint64_t bytes)
{
	return (bytes + cs(img) - 1) >> img->g.cluster_bits;
}

/* The file offset past which nothing exists yet: a bound for decoding
 * tables this image wrote itself. */
static uint64_t file_limit(const uq_image *img)
{
	return img->alloc.host_end > img->file_size ? img->alloc.host_end : img->file_size;
}

int uq_snap_find(const uq_image *img, const char *id_or_name, uint32_t *idx)
{
	for (uint32_t i = 0; i < img->snap.n; i++)
		if (!strcmp(img->snap.list[i].id, id_or_name)) {
			*idx = i;
			return 0;
		}
	for (uint32_t i = 0; i < img->snap.n; i++)
		if (!strcmp(img->snap.list[i].name, id_or_name)) {
			*idx = i;
			return 0;
		}
	return uq_seterr(-ENOENT, "%s: no snapshot with ID or name '%s'", img->path,
			 id_or_name);
}

/* ---- tables ---- */

static int read_l1(uq_image *img, uint64_t off, uint32_t n, uint64_t *l1)
{
	uint64_t *t;
	int ret;

	if (!n)
		return 0;
	ret = uq_read_table64(img, UQ_MK_L1, off, n, &t);
	if (ret < 0)
		return uq_seterr(ret, "%s: reading the L1 table at 0x%llx failed", img->path,
				 (unsigned long long)off);
	memcpy(l1, t, (size_t)n * 8);
	free(t);
	return 0;
}

/* Write n entries at off; whole clusters when pad (a new table's tail
 * reads as zeros whatever the cluster held before). */
static int write_l1(uq_image *img, uint64_t off, const uint64_t *l1, uint32_t n, bool pad)
{
	uint64_t bytes = pad ? clusters_for(img, (uint64_t)n * 8) * cs(img) : (uint64_t)n * 8;
	int ret = uq_write_table64(img, UQ_MK_L1, off, l1, n, bytes);

	if (ret < 0)
		return uq_seterr(ret, "%s: writing the L1 table at 0x%llx failed", img->path,
				 (unsigned long long)off);
	return 0;
}

/* The write path takes a cluster past written_end to read as zeros and
 * writes only the guest bytes into it. Tables written here (and L2 tables
 * written by a flush) land past it without moving it, and freeing them
 * would hand their stale bytes to the next partial write: count every
 * allocated cluster as written. */
static void written_to_host_end(uq_image *img)
{
	if (img->alloc.written_end < img->alloc.host_end)
		img->alloc.written_end = img->alloc.host_end;
}

/* Refcounts to disk, then a barrier: what follows may rely on them. */
static int rc_sync(uq_image *img)
{
	int ret = uq_rc_write_dirty(img);

	if (ret == 0)
		ret = io_fsync(img->file);
	return ret;
}

/* Drop one reference to each cluster of [off, off + bytes). */
static int unref_range(uq_image *img, uint64_t off, uint64_t bytes)
{
	uint64_t first = off >> img->g.cluster_bits;
	int ret = 0;

	if (!bytes)
		return 0;
	uq_meta_del(img, off, bytes);
	for (uint64_t c = first; c < first + clusters_for(img, bytes) && ret == 0; c++)
		ret = uq_rc_add(img, c, -1);
	return ret;
}





/* ---- the snapshot table ---- */

/* After a change reached the disk, a failure leaves memory and file out
 * of step: stop writing rather than guess (the file itself only leaks). */
static int failed(uq_image *img, int ret)
{
	uq_stop_writes(img, "a snapshot operation failed after it changed the file");
	return ret;
}


static void free_snaps(struct uq_snap *s, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		free(s[i].id);
		free(s[i].name);
	}
	free(s);
}

/* The in-memory list from a table this image just wrote. */
static int parse_table(uq_image *img, const uint8_t *buf, size_t len, uint32_t n)
{
	struct uq_snap *snaps = n ? calloc(n, sizeof(*snaps)) : NULL;
	size_t pos = 0;
	int ret = 0;

	if (n && !snaps)
		return -ENOMEM;
	for (uint32_t i = 0; ret == 0 && i < n; i++) {
		struct uq_snapshot_raw s;

		ret = uq_snapshot_decode(&img->g, buf + pos, len - pos, file_limit(img), &s);
		if (ret < 0)
			break;
		snaps[i].raw = s;
		snaps[i].raw.id = snaps[i].raw.name = NULL;
		snaps[i].id = strndup((const char *)s.id, s.id_len);
		snaps[i].name = strndup((const char *)s.name, s.name_len);
		if (!snaps[i].id || !snaps[i].name)
			ret = -ENOMEM;
		pos += s.entry_len;
	}
	if (ret < 0) {
		free_snaps(snaps, n);
		return ret;
	}
	free_snaps(img->snap.list, img->snap.n);
	img->snap.list = snaps;
	img->snap.n = n;
	return 0;
}

static uint64_t round8(uint64_t v) { return (v + 7) & ~7ull; }

/* Replace the snapshot table by the current entries except skip
 * (UINT32_MAX: none) plus add (NULL: none), kept byte for byte so extra
 * data we don't know survives. The new table is durable before the one
 * header write (nb_snapshots and snapshots_offset, bytes 60..71) that
 * switches to it; the old table is freed after. */
/* An entry as v3 requires it: the 64-bit VM state size and the disk size
 * in its extra data (disk_size: the image's when the entry has none). */
static bool lacks_v3(const struct uq_snap *sn)
{
	return sn->raw.extra_size < 16;
}

static struct uq_snapshot_raw v3_entry(const uq_image *img, const struct uq_snap *sn)
{
	struct uq_snapshot_raw r = sn->raw;

	r.id = (const uint8_t *)sn->id;
	r.name = (const uint8_t *)sn->name;
	/* the strings end at the first NUL; the on-disk lengths may be
	 * longer (an ID or name holding a NUL byte): encoding with those read
	 * past them. qemu writes strlen() lengths back too. */
	r.id_len = (uint16_t)strlen(sn->id);
	r.name_len = (uint16_t)strlen(sn->name);
	r.has_icount = false;
	if (!r.has_disk_size) {
		r.has_disk_size = true;
		r.disk_size = img->size;
	}
	return r;
}

static int replace_table(uq_image *img, uint32_t skip, const struct uq_snapshot_raw *add,
			 bool v3)
{
	uint64_t old_off = img->h.snapshots_offset, old_len = 0, len = 0, off = 0;
	uint32_t n = 0;
	uint8_t *old = NULL, *buf = NULL, hdr[12];
	size_t pos = 0, opos = 0;
	long addlen = add ? uq_snapshot_encode(add, NULL, 0) : 0;
	bool touched = false;   /* something was allocated or written */
	int ret;

	if (addlen < 0)
		return (int)addlen;
	for (uint32_t i = 0; i < img->snap.n; i++) {
		old_len += img->snap.list[i].raw.entry_len;
		if (i == skip)
			continue;
		if (v3 && lacks_v3(&img->snap.list[i])) {
			struct uq_snapshot_raw r = v3_entry(img, &img->snap.list[i]);
			long l = uq_snapshot_encode(&r, NULL, 0);

			if (l < 0)
				return (int)l;
			len += (uint64_t)l;
		} else {
			len += round8(img->snap.list[i].raw.entry_len);
		}
	}
	len += (uint64_t)addlen;
	if (len > QCOW_MAX_SNAPSHOT_TABLE)
		return uq_seterr(-EFBIG, "%s: the snapshot table would exceed 64 MiB",
				 img->path);
	old = malloc(old_len ? old_len : 1);
	buf = calloc(1, len ? clusters_for(img, len) * cs(img) : 1);
	if (!old || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	ret = old_len ? uq_meta_pread(img, UQ_MK_SNAPTABLE, old, old_len, old_off) : 0;
	if (ret < 0) {
		uq_seterr(ret, "%s: reading the snapshot table failed", img->path);
		goto out;
	}
	for (uint32_t i = 0; i < img->snap.n; i++) {
		size_t el = img->snap.list[i].raw.entry_len;

		if (i != skip && v3 && lacks_v3(&img->snap.list[i])) {
			struct uq_snapshot_raw r = v3_entry(img, &img->snap.list[i]);
			long l = uq_snapshot_encode(&r, buf + pos, len - pos);

			if (l < 0) {
				ret = (int)l;
				goto out;
			}
			pos += (size_t)l;
			n++;
		} else if (i != skip) {
			memcpy(buf + pos, old + opos, el);   /* padding stays zero */
			pos += round8(el);
			n++;
		}
		opos += el;
	}
	if (add) {
		ret = (int)uq_snapshot_encode(add, buf + pos, len - pos);
		if (ret < 0)
			goto out;
		n++;
	}
	touched = true;
	if (n) {
		ret = uq_rc_alloc(img, clusters_for(img, len), &off);
		if (ret == 0 && uq_meta_overlaps(img, off, len))
			ret = uq_mark_corrupt(img, "a new snapshot table", off);
		if (ret == 0)
			ret = uq_meta_add(img, off, len);
		if (ret == 0)
			ret = uq_meta_pwrite(img, UQ_MK_SNAPTABLE, buf,
					     clusters_for(img, len) * cs(img), off);
	}
	if (ret == 0)
		ret = rc_sync(img);
	uq_put_be32(hdr, n);
	uq_put_be64(hdr + 4, off);
	if (ret == 0)
		ret = uq_header_write_field(img, QCOW_HDR_NB_SNAPSHOTS, hdr, sizeof(hdr));
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0) {
		uq_seterr(ret, "%s: writing the snapshot table failed: %s", img->path,
			  uq_errmsg());
		goto out;
	}
	img->h.nb_snapshots = n;
	img->h.snapshots_offset = off;
	if (old_len)
		ret = unref_range(img, old_off, old_len);
	if (ret == 0)
		ret = parse_table(img, buf, (size_t)len, n);
out:
	free(old);
	free(buf);
	return ret < 0 && touched ? failed(img, ret) : ret;
}

int uq_snaps_to_v3(uq_image *img)
{
	bool need = false;

	for (uint32_t i = 0; i < img->snap.n; i++)
		need |= lacks_v3(&img->snap.list[i]);
	return need ? replace_table(img, UINT32_MAX, NULL, true) : 0;
}

/* ---- public calls ---- */

static int need_snapshots(uq_image *img, bool write)
{
	if (img->fmt != UQ_FMT_QCOW2)
		return uq_seterr(-ENOTSUP, "%s: not a qcow2 image: no internal snapshots",
				 img->path);
	if (write && (!(img->flags & UQ_OPEN_RDWR) || !img->writable))
		return uq_seterr(-EROFS, "%s: image is not open for writing", img->path);
	if (write && img->g.external_data)
		return uq_seterr(-ENOTSUP, "%s: internal snapshots are not supported with "
				 "an external data file", img->path);
	return 0;
}

/* The virtual size a snapshot brings along: its disk size field (v2
 * entries may lack it: the current size). A hostile one must not become a
 * size nothing could map (a 32 MiB L1 table) or past what an off_t holds. */
static int snap_size(uq_image *img, const struct uq_snapshot_raw *sn, const char *name,
		     uint64_t *size, uint64_t *l1_entries)
{
	uint64_t v = sn->has_disk_size ? sn->disk_size : img->size, n;
	int ret = uq_l1_entries_for(v, img->g.cluster_bits, img->g.extended_l2, &n);

	if (ret == 0 && (v > (1ull << 63) - img->g.cluster_size ||
			 n * 8 > QCOW_MAX_L1_BYTES))
		ret = -EFBIG;
	if (ret < 0)
		return uq_seterr(ret, "%s: snapshot '%s': disk size %llu is too large",
				 img->path, name, (unsigned long long)v);
	*size = v;
	*l1_entries = n;
	return 0;
}

static bool id_taken(const uq_image *img, const char *id)
{
	for (uint32_t i = 0; i < img->snap.n; i++)
		if (!strcmp(img->snap.list[i].id, id))
			return true;
	return false;
}

/* The snapshot named name_or_id, and the virtual size it brings along. */
static int snap_lookup(uq_image *img, const char *name_or_id, struct uq_snapshot_raw *sn,
		       uint64_t *size, uint64_t *l1_entries)
{
	uint32_t idx;
	int ret = uq_snap_find(img, name_or_id, &idx);

	if (ret < 0)
		return ret;
	*sn = img->snap.list[idx].raw;
	return snap_size(img, sn, name_or_id, size, l1_entries);
}

/* qemu's rule: one more than the largest numeric ID. Unlike qemu, the
 * result is unique even where the largest is ULONG_MAX and wraps (an ID
 * names one snapshot, or apply and delete would pick the wrong one):
 * at most nb_snaps candidates can be taken. */
static void next_id(const uq_image *img, char *id, size_t len)
{
	unsigned long max = 0;

	for (uint32_t i = 0; i < img->snap.n; i++) {
		unsigned long v = strtoul(img->snap.list[i].id, NULL, 10);

		if (v > max)
			max = v;
	}
	do
		snprintf(id, len, "%lu", ++max);
	while (id_taken(img, id));
}

static int snapshot_create(uq_image *img, const char *name)
{
	uint32_t n = img->h.l1_size;
	uint64_t off = 0, *copy = NULL;
	struct uq_snapshot_raw s = { 0 };
	struct timespec ts;
	char id[24];
	int ret = need_snapshots(img, true);

	if (ret < 0)
		return ret;
	if (img->h.refcount_order == 0)
		return uq_seterr(-ENOTSUP, "%s: snapshots need refcount_bits >= 2 (this image "
				 "has 1); uqcow amend -o refcount_bits=16 %s", img->path,
				 img->path);
	if (!name[0] || strlen(name) > MAX_NAME)
		return uq_seterr(-EINVAL, "%s: a snapshot name has 1 to %u bytes", img->path,
				 MAX_NAME);
	if (img->snap.n >= QCOW_MAX_SNAPSHOTS)
		return uq_seterr(-EFBIG, "%s: the image already has %u snapshots, the most "
				 "qcow2 allows", img->path, QCOW_MAX_SNAPSHOTS);
	ret = uq_meta_flush(img);
	if (ret < 0)
		return ret;
	written_to_host_end(img);
	ret = uq_snap_update_refs(img, img->l1, n, 1, NULL, 0);
	if (ret == -ERANGE)
		return uq_seterr(ret, "%s; uqcow amend -o refcount_bits=%u %s makes room "
				 "for more snapshots", uq_errmsg(),
				 img->h.refcount_order < 4 ? 16 : 64, img->path);
	if (ret < 0)
		return ret;
	copy = malloc(n ? (size_t)n * 8 : 1);
	if (!copy)
		ret = -ENOMEM;
	if (ret == 0 && n)
		ret = uq_rc_alloc(img, clusters_for(img, (uint64_t)n * 8), &off);
	if (ret < 0) {
		/* nothing is on disk yet: give the references back */
		if (uq_snap_update_refs(img, img->l1, n, -1, NULL, 0) < 0)
			uq_stop_writes(img, "undoing a snapshot's refcount changes failed");
		free(copy);
		return ret;
	}
	/* COPIED goes first (a crash then leaves flags clear on clusters
	 * still counted once: only a needless copy on the next write), then
	 * the copy and every increment become durable, then the table makes
	 * the snapshot visible. The flags are computed from the raised counts
	 * in memory. */
	for (uint32_t i = 0; i < n; i++)
		copy[i] = img->l1[i] & ~QCOW_OFLAG_COPIED;
	if (n && uq_meta_overlaps(img, off, (uint64_t)n * 8))
		ret = uq_mark_corrupt(img, "a snapshot L1 table", off);
	if (ret == 0 && n)
		ret = uq_meta_add(img, off, (uint64_t)n * 8);
	if (ret == 0)
		ret = write_l1(img, off, copy, n, true);
	free(copy);
	if (ret == 0)
		ret = uq_snap_fix_copied(img);
	if (ret == 0)
		ret = rc_sync(img);
	if (ret < 0)
		return failed(img, ret);
	clock_gettime(CLOCK_REALTIME, &ts);
	next_id(img, id, sizeof(id));
	s.l1_table_offset = off;
	s.l1_size = n;
	s.id = (const uint8_t *)id;
	s.id_len = (uint16_t)strlen(id);
	s.name = (const uint8_t *)name;
	s.name_len = (uint16_t)strlen(name);
	s.date_sec = (uint32_t)ts.tv_sec;
	/* microseconds, as qemu-img stores the time it took */
	s.date_nsec = (uint32_t)(ts.tv_nsec / 1000 * 1000);
	s.disk_size = img->size;
	s.has_disk_size = true;
	s.has_icount = true;      /* qemu-img writes icount 0 with 24 bytes of extra */
	ret = replace_table(img, UINT32_MAX, &s, false);
	if (ret == 0)
		ret = rc_sync(img);
	img->alloc.comp_next = 0;
	written_to_host_end(img);
	return ret < 0 ? failed(img, ret) : 0;
}

/* Once a state's references are gone (ret 0): free its L1 table, write
 * the refcounts and restore COPIED flags where a refcount fell to 1. */
static int settle(uq_image *img, int ret, uint64_t l1_off, uint64_t l1_bytes)
{
	if (ret == 0)
		ret = unref_range(img, l1_off, l1_bytes);
	if (ret == 0)
		ret = rc_sync(img);
	if (ret == 0)
		ret = uq_snap_fix_copied(img);
	img->alloc.comp_next = 0;
	written_to_host_end(img);
	return ret < 0 ? failed(img, ret) : 0;
}

static int snapshot_apply(uq_image *img, const char *name_or_id)
{
	uint64_t size, need, off = 0, old_off = img->h.l1_table_offset, *l1, *old;
	uint32_t n, old_n = img->h.l1_size;
	struct uq_snapshot_raw sn;
	int ret = need_snapshots(img, true);

	if (ret == 0)
		ret = snap_lookup(img, name_or_id, &sn, &size, &need);
	if (ret < 0)
		return ret;
	/* the L1 table covers both the snapshot's table and its disk size */
	n = sn.l1_size > need ? sn.l1_size : (uint32_t)need;
	if (!n)
		n = 1;
	if ((uint64_t)n * 8 > QCOW_MAX_L1_BYTES)
		return uq_seterr(-EFBIG, "%s: snapshot '%s' needs an L1 table over 32 MiB",
				 img->path, name_or_id);
	ret = uq_meta_flush(img);
	if (ret < 0)
		return ret;
	written_to_host_end(img);
	l1 = calloc(n, 8);
	if (!l1)
		return -ENOMEM;
	ret = read_l1(img, sn.l1_table_offset, sn.l1_size, l1);
	/* a snapshot's flags mean nothing: start clear, recompute at the end */
	for (uint32_t i = 0; i < sn.l1_size; i++)
		l1[i] &= ~QCOW_OFLAG_COPIED;
	/* what the old state references at the same place keeps its count:
	 * a narrow width then overflows only where the result would */
	if (ret == 0)
		ret = uq_snap_update_refs(img, l1, sn.l1_size, 1, img->l1, img->h.l1_size);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	ret = uq_rc_alloc(img, clusters_for(img, (uint64_t)n * 8), &off);
	if (ret < 0) {
		if (uq_snap_update_refs(img, l1, sn.l1_size, -1, img->l1, img->h.l1_size) < 0)
			uq_stop_writes(img, "undoing a snapshot's refcount changes failed");
		free(l1);
		return ret;
	}
	/* a new active table and one header write (size, l1_size and
	 * l1_table_offset, bytes 24..47): a crash sees the old state or the
	 * new one, never a mix, and only leaks */
	if (uq_meta_overlaps(img, off, (uint64_t)n * 8))
		ret = uq_mark_corrupt(img, "a new L1 table", off);
	if (ret == 0)
		ret = uq_meta_add(img, off, (uint64_t)n * 8);
	if (ret == 0)
		ret = write_l1(img, off, l1, n, true);
	if (ret == 0)
		ret = rc_sync(img);
	if (ret == 0)
		ret = uq_header_write_size_l1(img, size, n, off);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0) {
		free(l1);
		return failed(img, ret);
	}
	old = uq_l1_replace(img, l1, n, off);
	img->size = img->h.size = size;
	/* the old state's references go; what only it used is freed */
	ret = uq_snap_update_refs(img, old, old_n, -1, l1, n);
	free(old);
	return settle(img, ret, old_off, (uint64_t)old_n * 8);
}

static int snapshot_delete(uq_image *img, const char *name_or_id)
{
	struct uq_snapshot_raw sn;
	uint64_t *l1 = NULL;
	uint32_t idx;
	int ret = need_snapshots(img, true);

	if (ret == 0)
		ret = uq_snap_find(img, name_or_id, &idx);
	if (ret == 0)
		ret = uq_meta_flush(img);
	if (ret < 0)
		return ret;
	written_to_host_end(img);
	sn = img->snap.list[idx].raw;
	l1 = malloc(sn.l1_size ? (size_t)sn.l1_size * 8 : 1);
	if (!l1)
		return -ENOMEM;
	/* read while the table still names it; refuse a broken one unchanged */
	ret = read_l1(img, sn.l1_table_offset, sn.l1_size, l1);
	for (uint32_t i = 0; ret == 0 && i < sn.l1_size; i++) {
		uint64_t l2;
		bool copied;

		ret = uq_l1_decode(&img->g, l1[i], &l2, &copied);
		if (ret < 0)
			uq_seterr(ret, "%s: snapshot '%s': L1 entry %u: %s", img->path,
				  name_or_id, i, uq_errmsg());
	}
	if (ret == 0)
		ret = replace_table(img, idx, NULL, false);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	/* gone from the table: from here a crash only leaks */
	ret = uq_snap_update_refs(img, l1, sn.l1_size, -1, NULL, 0);
	free(l1);
	return settle(img, ret, sn.l1_table_offset, (uint64_t)sn.l1_size * 8);
}

/* Every failure carries a message: I/O errors from below come bare. */
static int explain(uq_image *img, int ret, const char *what)
{
	if (ret < 0 && !uq_errmsg()[0])
		uq_seterr(ret, "%s: %s failed: %s", img->path, what, strerror(-ret));
	return ret;
}

int uq_snapshot_create_impl(uq_image *img, const char *name)
{
	uq_errclear();
	return explain(img, snapshot_create(img, name), "snapshot create");
}

int uq_snapshot_apply_impl(uq_image *img, const char *name_or_id)
{
	uq_errclear();
	/* the guest disk would change under every bitmap: qemu 7.2 refuses
	 * too, disabled bitmaps included */
	if (img->bm.n)
		return uq_seterr(-EBUSY, "%s: Device has active dirty bitmaps", img->path);
	return explain(img, snapshot_apply(img, name_or_id), "snapshot apply");
}

int uq_snapshot_delete_impl(uq_image *img, const char *name_or_id)
{
	uq_errclear();
	return explain(img, snapshot_delete(img, name_or_id), "snapshot delete");
}

int uq_snapshot_view_impl(uq_image *img, const char *name_or_id)
{
	struct uq_snapshot_raw sn;
	uint64_t *l1, size, need;
	int ret = need_snapshots(img, false);

	if (ret == 0 && (img->flags & UQ_OPEN_RDWR))
		ret = uq_seterr(-EBUSY, "%s: open the image read-only to read a snapshot",
				img->path);
	if (ret == 0)
		ret = snap_lookup(img, name_or_id, &sn, &size, &need);
	if (ret < 0)
		return ret;
	l1 = malloc(sn.l1_size ? (size_t)sn.l1_size * 8 : 1);
	if (!l1)
		return -ENOMEM;
	ret = read_l1(img, sn.l1_table_offset, sn.l1_size, l1);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	/* cached L2 tables are keyed by offset and stay valid: both tables
	 * name the same clusters where they share them */
	free(uq_l1_replace(img, l1, sn.l1_size, sn.l1_table_offset));
	img->size = img->h.size = size;
	return 0;
}

int uq_snaps_load(uq_image *img)
{
	uint64_t off = img->h.snapshots_offset, avail;
	uint32_t n = img->h.nb_snapshots;
	uint8_t *tab;
	size_t pos = 0;
	int ret = 0;

	if (!n)
		return 0;
	/* header decode put the table start inside the file */
	avail = img->file_size - off;
	if (avail > QCOW_MAX_SNAPSHOT_TABLE)
		avail = QCOW_MAX_SNAPSHOT_TABLE;
	tab = malloc(avail ? avail : 1);
	img->snap.list = calloc(n, sizeof(*img->snap.list));
	if (!tab || !img->snap.list) {
		free(tab);
		return -ENOMEM;
	}
	ret = uq_meta_pread(img, UQ_MK_SNAPTABLE, tab, avail, off);
	for (uint32_t i = 0; ret == 0 && i < n; i++) {
		struct uq_snapshot_raw s;
		struct uq_snap *d = &img->snap.list[i];

		ret = uq_snapshot_decode(&img->g, tab + pos, avail - pos,
					 img->file_size, &s);
		if (ret < 0) {
			char msg[512];

			snprintf(msg, sizeof(msg), "%s", uq_errmsg());
			ret = uq_seterr(ret, "snapshot table: entry %u: %s%s", i, msg,
					avail == QCOW_MAX_SNAPSHOT_TABLE ?
					" (table limit is 64 MiB)" : "");
			break;
		}
		d->raw = s;
		d->raw.id = d->raw.name = NULL;
		d->id = strndup((const char *)s.id, s.id_len);
		d->name = strndup((const char *)s.name, s.name_len);
		if (!d->id || !d->name)
			ret = -ENOMEM;
		img->snap.n = i + 1;
		pos += s.entry_len;
	}
	free(tab);
	return ret;
}

void uq_snaps_release(uq_image *img)
{
	free_snaps(img->snap.list, img->snap.n);
	img->snap.list = NULL;
	img->snap.n = 0;
}
