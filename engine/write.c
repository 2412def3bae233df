// SPDX-License-Identifier: MIT
/* The write path: allocating and in-place writes, write-zeroes, discard and
 * compressed writes, with metadata kept dirty in memory and written back in
 * the order DESIGN.md requires (data, refcounts, L2, L1, then frees). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "error.h"
#include "internal.h"

/* A guest write, zeroing or discard: pieces finish asynchronously. */
struct wreq {
	uq_image *img;
	struct uq_done *d;
	size_t len;
	unsigned pending;
	int err;
};

struct wop {
	struct io_req io;
	struct wreq *wr;
};

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }

static void wreq_put(struct wreq *wr)
{
	if (--wr->pending)
		return;
	wr->d->res = wr->err ? wr->err : (ssize_t)wr->len;
	uq_ctx_complete(wr->img->ctx, wr->d);
	free(wr);
}

/* ---- helpers ---- */

struct sync_flag {
	bool done;
	ssize_t res;
};

static void flag_done(void *arg, ssize_t res)
{
	struct sync_flag *f = arg;

	f->done = true;
	f->res = res;
}

/* Read guest content without delivering user completions: copy-on-write
 * needs the old bytes while the caller is inside a submission. */
int uq_internal_pread(uq_image *img, void *buf, size_t len, uint64_t off)
{
	struct sync_flag f = { 0 };
	int ret = uq_read_start(img, img->ctx, buf, len, off, flag_done, &f);

	while (ret == 0 && !f.done) {
		ret = io_reap(img->ctx->q, 1);
		if (ret == 0 && !f.done)
			return uq_seterr(-EIO, "%s: read stalled", img->path);
		ret = ret < 0 ? ret : 0;
	}
	return ret < 0 ? ret : f.res < 0 ? (int)f.res : 0;
}

static int data_write_sync(uq_image *img, const void *buf, size_t len, uint64_t host)
{
	int ret = io_pwrite_full(img->data, buf, len, host);

	if (ret < 0)
		return uq_seterr(ret, "%s: writing data at 0x%llx failed: %s", img->path,
				 (unsigned long long)host, strerror(-ret));
	if (host + len > img->written_end)
		img->written_end = host + len;
	return 0;
}

static uint64_t l2_idx(const uq_image *img, uint64_t off)
{
	return uq_cluster_of(img, off) & (img->g.l2_entries - 1);
}

/* Make the table at l2_off resident (then it can be updated or copied). */
static int l2_load(uq_image *img, uint64_t l2_off)
{
	uint64_t e[2];

	return uq_l2_entry_sync(img, l2_off, 0, e);
}

/* Offset of the L2 table of the guest offset, copied or created so that
 * it can be changed. */
static int l2_for_write(uq_image *img, uint64_t off, uint64_t *out)
{
	uint64_t l1i = uq_cluster_of(img, off) >> img->g.l2_bits;
	uint64_t l2_off = 0, new_off, rc = 1;
	uint8_t *copy = NULL;
	bool copied;
	int ret;

	if (l1i >= img->h.l1_size)
		return uq_seterr(-EINVAL, "%s: guest offset 0x%llx is beyond the L1 table",
				 img->path, (unsigned long long)off);
	ret = uq_l1_decode(&img->g, img->l1[l1i], &l2_off, &copied);
	if (ret < 0)
		return ret;
	/* Keep at most half the cache dirty, counting a table about to become
	 * dirty, so lookups always find a clean slot to evict. A table that
	 * is dirty already costs nothing more. */
	if (!(l2_off && copied && l2c_is_dirty(img->l2c, l2_off)) &&
	    (l2c_dirty_count(img->l2c) + 1) * 2 > l2c_slots(img->l2c)) {
		ret = uq_meta_flush(img);
		if (ret < 0)
			return ret;
	}
	if (l2_off && !copied) {
		ret = uq_rc_get(img, l2_off >> img->g.cluster_bits, &rc);
		if (ret < 0)
			return ret;
		if (rc == 1) {          /* only the flag was stale */
			img->l1[l1i] = l2_off | QCOW_OFLAG_COPIED;
			img->l1_dirty = true;
			copied = true;
		}
	}
	if (l2_off && copied) {
		*out = l2_off;
		return 0;
	}
	ret = uq_rc_alloc(img, 1, &new_off);
	if (ret < 0)
		return ret;
	if (uq_meta_overlaps(img, new_off, csz(img)))
		return uq_mark_corrupt(img, "a new L2 table", new_off);
	ret = uq_meta_add(img, new_off, csz(img));
	if (ret < 0)
		return ret;
	if (l2_off) {               /* shared with a snapshot: copy it */
		copy = malloc(csz(img));
		if (!copy)
			return -ENOMEM;
		do {
			ret = l2_load(img, l2_off);
			if (ret == 0)
				ret = l2c_copy_out(img->l2c, l2_off, copy);
		} while (ret == -ENOENT);   /* evicted between the two: again */
		if (ret == 0)
			ret = uq_rc_free_later(img, l2_off, csz(img));
	}
	if (ret == 0)
		ret = l2c_install(img->l2c, new_off, copy);
	if (ret == -EBUSY) {            /* every slot dirty: write them out */
		ret = uq_meta_flush(img);
		if (ret == 0)
			ret = l2c_install(img->l2c, new_off, copy);
	}
	free(copy);
	if (ret < 0)
		return ret;
	l2c_set_dirty(img->l2c, new_off);
	img->l1[l1i] = new_off | QCOW_OFLAG_COPIED;
	img->l1_dirty = true;
	*out = new_off;
	return 0;
}

static int set_entry(uq_image *img, uint64_t off, uint64_t entry, uint64_t bitmap)
{
	uint64_t l2_off = 0, v[2] = { entry, bitmap };
	unsigned words = img->g.extended_l2 ? 2 : 1;
	int ret = l2_for_write(img, off, &l2_off);

	/* a reader thread's miss may evict a clean table until the update
	 * marks it dirty: load and try again */
	while (ret == 0) {
		ret = l2c_update(img->l2c, l2_off, l2_idx(img, off), words, v);
		if (ret != -ENOENT)
			break;
		ret = l2_load(img, l2_off);
	}
	return ret;
}

/* Drop the references the old mapping held (after the L2 change lands). */
static int release(uq_image *img, const struct uq_l2map *m, uint64_t keep)
{
	if (img->g.external_data)
		return 0;   /* data clusters of an external file aren't refcounted */
	if (m->type == UQ_C_COMPRESSED)
		return uq_rc_free_later(img, m->comp_off & ~511ull,
					((m->comp_off & 511) + m->comp_len + 511) & ~511ull);
	if (m->host_off && m->host_off != keep)
		return uq_rc_free_later(img, m->host_off, csz(img));
	return 0;
}

/* A host cluster for a guest cluster that needs one. */
static int alloc_data(uq_image *img, uint64_t guest_cluster_off, uint64_t *host, bool *fresh)
{
	int ret;

	if (img->g.external_data) {
		/* fixed mapping: guest offset == offset in the data file */
		*host = guest_cluster_off;
		*fresh = false;
		return 0;
	}
	uint64_t written = img->written_end;   /* allocation moves it */

	ret = uq_rc_alloc(img, 1, host);
	if (ret < 0)
		return ret;
	*fresh = *host >= written;
	if (uq_meta_overlaps(img, *host, csz(img)))
		return uq_mark_corrupt(img, "guest data", *host);
	return 0;
}

static void wop_done(struct io_req *io, ssize_t res)
{
	struct wop *op = (struct wop *)io;
	struct wreq *wr = op->wr;

	wr->img->writes_inflight--;
	if (res < 0) {
		/* An L2 entry may already point at the cluster this write was
		 * to fill: stop writing so that entry never reaches the disk. */
		wr->img->writable = false;
		uq_seterr((int)res, "%s: writing data at 0x%llx failed: %s; no further "
			  "writes until the image is reopened", wr->img->path,
			  (unsigned long long)io->off, strerror((int)-res));
		if (!wr->err)
			wr->err = (int)res;
	}
	free(op);
	wreq_put(wr);
}

/* Rewrite in place: goes out on the queue, completes asynchronously. */
static int write_in_place(struct wreq *wr, const uint8_t *buf, size_t len, uint64_t host)
{
	uq_image *img = wr->img;
	struct wop *op;

	/* an external data file holds no metadata: its offsets are guest's */
	if (img->data == img->file && uq_meta_overlaps(img, host, len))
		return uq_mark_corrupt(img, "guest data", host);
	op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->wr = wr;
	op->io = (struct io_req){ .op = IO_WRITE, .file = img->data, .buf = (void *)buf,
				  .len = len, .off = host, .done = wop_done };
	wr->pending++;
	img->writes_inflight++;
	if (host + len > img->written_end)
		img->written_end = host + len;
	io_queue_req(img->ctx->q, &op->io);
	return 0;
}

static bool reads_zero(const uq_image *img, const struct uq_l2map *m)
{
	return m->type == UQ_C_ZERO || (m->type == UQ_C_UNALLOC && !img->backing);
}

/* ---- standard L2 entries ---- */

static int write_cluster(struct wreq *wr, const uint8_t *buf, uint64_t off, size_t len)
{
	uq_image *img = wr->img;
	uint64_t cs = csz(img), intra = off & (cs - 1), cstart = off - intra;
	size_t glen = img->size - cstart < cs ? (size_t)(img->size - cstart) : (size_t)cs;
	struct uq_l2map m;
	uint64_t host;
	bool fresh;
	int ret;

	ret = uq_map_entry(img, off, &m);
	if (ret < 0)
		return ret;
	if (m.type == UQ_C_NORMAL && m.copied)
		return write_in_place(wr, buf, len, m.host_off + intra);

	/* a preallocated zero cluster we own is reused */
	if (m.type == UQ_C_ZERO && m.host_off && m.copied) {
		host = m.host_off;
		fresh = false;
	} else {
		ret = alloc_data(img, cstart, &host, &fresh);
		if (ret < 0)
			return ret;
	}
	if (fresh && reads_zero(img, &m)) {
		/* A never-written cluster reads zeros around the data, and
		 * until the data lands it reads zeros like the old mapping did:
		 * the L2 entry may change now and the write complete later
		 * (flush waits for it before any L2 table reaches the disk). */
		ret = write_in_place(wr, buf, len, host + intra);
	} else if (len == glen) {
		ret = data_write_sync(img, buf, len, host);
	} else {
		uint8_t *c = malloc(glen);

		if (!c)
			return -ENOMEM;
		ret = reads_zero(img, &m) ? (memset(c, 0, glen), 0)
					  : uq_internal_pread(img, c, glen, cstart);
		if (ret == 0) {
			memcpy(c + intra, buf, len);
			ret = data_write_sync(img, c, glen, host);
		}
		free(c);
	}
	if (ret == 0)
		ret = set_entry(img, off, host | QCOW_OFLAG_COPIED, 0);
	if (ret == 0)
		ret = release(img, &m, host);
	return ret;
}

/* ---- extended L2 entries (subclusters) ---- */

static uint32_t sc_mask(unsigned first, unsigned last)
{
	uint64_t m = ((2ull << last) - 1) & ~((1ull << first) - 1);

	return (uint32_t)m;
}

/* Subclusters inside the image (the last cluster may be cut short). */
static uint32_t sc_in_image(const uq_image *img, uint64_t cstart)
{
	uint64_t scs = 1ull << img->g.subcluster_bits;
	uint64_t n = (img->size - cstart + scs - 1) / scs;

	return n >= 32 ? 0xffffffffu : (uint32_t)((1ull << n) - 1);
}

static int write_subclusters(struct wreq *wr, const uint8_t *buf, uint64_t off, size_t len)
{
	uq_image *img = wr->img;
	uint64_t cs = csz(img), intra = off & (cs - 1), cstart = off - intra;
	uint64_t scs = 1ull << img->g.subcluster_bits;
	unsigned first = (unsigned)(intra / scs), last = (unsigned)((intra + len - 1) / scs);
	struct uq_l2map m;
	uint64_t host, span_start, span_end;
	uint32_t alloc, zero, touched = sc_mask(first, last);
	bool fresh = false, whole;
	uint8_t *c = NULL;
	int ret;

	ret = uq_map_entry(img, off, &m);
	if (ret < 0)
		return ret;
	bool owned = m.type == UQ_C_SUBCLUSTERS && m.host_off && m.copied;

	/* in place when every touched subcluster is already allocated here */
	if (owned && (m.alloc_mask & touched) == touched)
		return write_in_place(wr, buf, len, m.host_off + intra);
	/* a new host cluster must carry over what the old one held */
	whole = !owned && (m.type == UQ_C_COMPRESSED ||
			   (m.type == UQ_C_SUBCLUSTERS && m.alloc_mask));
	if (owned) {
		host = m.host_off;
	} else {
		ret = alloc_data(img, cstart, &host, &fresh);
		if (ret < 0)
			return ret;
	}
	span_start = whole ? 0 : (uint64_t)first * scs;
	span_end = whole ? cs : (uint64_t)(last + 1) * scs;
	if (cstart + span_end > img->size)
		span_end = img->size - cstart;
	size_t slen = (size_t)(span_end - span_start);

	if (span_start == intra && slen == len) {
		ret = data_write_sync(img, buf, len, host + intra);
	} else {
		c = malloc(slen);
		if (!c)
			return -ENOMEM;
		ret = uq_internal_pread(img, c, slen, cstart + span_start);
		if (ret == 0) {
			memcpy(c + (intra - span_start), buf, len);
			ret = data_write_sync(img, c, slen, host + span_start);
		}
		free(c);
	}
	if (ret < 0)
		return ret;
	if (whole) {
		alloc = sc_in_image(img, cstart);
		zero = 0;
	} else {
		alloc = (owned ? m.alloc_mask : 0) |
			sc_mask((unsigned)(span_start / scs), (unsigned)((span_end - 1) / scs));
		zero = (m.type == UQ_C_SUBCLUSTERS ? m.zero_mask : 0) & ~alloc;
	}
	(void)fresh;
	ret = set_entry(img, off, host | QCOW_OFLAG_COPIED, ((uint64_t)zero << 32) | alloc);
	if (ret == 0 && !owned)
		ret = release(img, &m, host);
	return ret;
}

/* ---- compressed clusters ---- */

/* Bytes for a compressed cluster, packed after the previous one; a host
 * cluster holding k of them has refcount k. */
static int alloc_compressed(uq_image *img, uint64_t n, uint64_t *off)
{
	uint64_t cs = csz(img), max = uq_refcount_max(img->g.refcount_order);
	uint64_t pos = img->comp_next, v;
	int ret;

	if (pos && (pos & (cs - 1))) {
		uint64_t cur = pos / cs, rem = cs - (pos & (cs - 1));

		ret = uq_rc_get(img, cur, &v);
		if (ret < 0)
			return ret;
		if (v && v < max && n <= rem) {
			ret = uq_rc_add(img, cur, 1);
			if (ret < 0)
				return ret;
			*off = pos;
			img->comp_next = pos + n;
			return 0;
		}
	}
	ret = uq_rc_alloc(img, (n + cs - 1) / cs, off);
	if (ret < 0)
		return ret;
	if (uq_meta_overlaps(img, *off, n))
		return uq_mark_corrupt(img, "compressed data", *off);
	img->comp_next = *off + n;
	return 0;
}

static int write_compressed(struct wreq *wr, const uint8_t *buf, uint64_t off, size_t len)
{
	uq_image *img = wr->img;
	uint64_t cs = csz(img), coff;
	uint8_t *plain = NULL, *z = NULL;
	struct uq_l2map m;
	ssize_t n;
	int ret;

	if (off & (cs - 1) || (len != cs && off + len != img->size))
		return uq_seterr(-EINVAL, "%s: compressed writes must cover whole clusters",
				 img->path);
	if (img->g.external_data)
		return uq_seterr(-ENOTSUP, "%s: compressed clusters can't live in an "
				 "external data file", img->path);
	plain = calloc(1, cs);
	z = malloc(cs);
	if (!plain || !z) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(plain, buf, len);
	/* not worth it unless it saves at least a sector */
	n = uq_compress(img->h.compression_type, plain, cs, z, cs - 512);
	if (n == -ENOSPC) {
		ret = img->g.extended_l2 ? write_subclusters(wr, buf, off, len)
					 : write_cluster(wr, buf, off, len);
		goto out;
	}
	if (n < 0) {
		ret = (int)n;
		goto out;
	}
	ret = uq_map_entry(img, off, &m);
	if (ret == 0)
		ret = alloc_compressed(img, (uint64_t)n, &coff);
	if (ret == 0)
		ret = data_write_sync(img, z, (size_t)n, coff);
	if (ret == 0)
		ret = set_entry(img, off, uq_l2_encode_compressed(&img->g, coff, (uint64_t)n), 0);
	if (ret == 0)
		ret = release(img, &m, UINT64_MAX);
out:
	free(plain);
	free(z);
	return ret;
}

/* ---- zeroing and discard ---- */

static int zero_cluster(struct wreq *wr, uint64_t off, size_t len, unsigned flags)
{
	uq_image *img = wr->img;
	uint64_t cs = csz(img), intra = off & (cs - 1), cstart = off - intra;
	size_t glen = img->size - cstart < cs ? (size_t)(img->size - cstart) : (size_t)cs;
	bool full = intra == 0 && len == glen;
	struct uq_l2map m;
	uint8_t *zeros;
	int ret;

	ret = uq_map_entry(img, off, &m);
	if (ret < 0)
		return ret;
	if (reads_zero(img, &m) && !(full && (flags & UQ_ZERO_UNMAP) && m.host_off))
		return 0;
	bool raw_data = img->h.autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW;

	if (full && img->h.version >= 3 && !img->g.extended_l2 && !raw_data) {
		bool keep = !(flags & UQ_ZERO_UNMAP) && m.host_off && m.copied &&
			    (m.type == UQ_C_NORMAL || m.type == UQ_C_ZERO);
		uint64_t host = keep ? m.host_off : 0;

		ret = set_entry(img, off, host ? host | QCOW_OFLAG_COPIED | QCOW_OFLAG_ZERO
					      : QCOW_OFLAG_ZERO, 0);
		return ret ? ret : release(img, &m, host);
	}
	if (full && img->g.extended_l2 && !raw_data && m.type != UQ_C_COMPRESSED) {
		bool keep = !(flags & UQ_ZERO_UNMAP) && m.host_off && m.copied &&
			    m.type == UQ_C_SUBCLUSTERS;
		uint64_t host = keep ? m.host_off : 0;

		ret = set_entry(img, off, host ? host | QCOW_OFLAG_COPIED : 0,
				(uint64_t)sc_in_image(img, cstart) << 32);
		return ret ? ret : release(img, &m, host);
	}
	if (full && img->h.version < 3 && !img->backing && !raw_data) {
		/* v2 has no zero flag: without a backing file, unallocated reads zeros */
		ret = set_entry(img, off, 0, 0);
		return ret ? ret : release(img, &m, 0);
	}
	zeros = calloc(1, len);
	if (!zeros)
		return -ENOMEM;
	/* partial clusters (and v2 over a backing file) get zeros written */
	ret = img->g.extended_l2 ? write_subclusters(wr, zeros, off, len)
				 : write_cluster(wr, zeros, off, len);
	if (wr->pending > 1) {
		/* an in-place write may still use the buffer: finish it now */
		while (ret == 0 && img->writes_inflight)
			if (io_reap(img->ctx->q, 1) < 0)
				break;
	}
	free(zeros);
	return ret;
}

static int discard_cluster(struct wreq *wr, uint64_t off, size_t len)
{
	uq_image *img = wr->img;
	uint64_t cs = csz(img), cstart = off & ~(cs - 1);
	size_t glen = img->size - cstart < cs ? (size_t)(img->size - cstart) : (size_t)cs;
	bool keep_zero = img->backing && img->h.version >= 3;
	struct uq_l2map m;
	int ret;

	if ((off & (cs - 1)) || len != glen)
		return 0;   /* discard works on whole clusters only */
	/* v2 has no zero flag: unmapping would show the backing file through,
	 * so, like qemu, discard does nothing there */
	if (img->h.version < 3 && img->backing)
		return 0;
	ret = uq_map_entry(img, off, &m);
	if (ret < 0)
		return ret;
	if (m.type == UQ_C_UNALLOC && !keep_zero)
		return 0;
	if (img->g.extended_l2)
		ret = set_entry(img, off, 0,
				keep_zero ? (uint64_t)sc_in_image(img, cstart) << 32 : 0);
	else
		ret = set_entry(img, off, keep_zero ? QCOW_OFLAG_ZERO : 0, 0);
	return ret ? ret : release(img, &m, 0);
}

/* ---- requests ---- */

enum wkind { W_DATA, W_ZERO, W_DISCARD };

static int check_writable(uq_image *img, uint64_t off, uint64_t len)
{
	if (!(img->flags & UQ_OPEN_RDWR))
		return uq_seterr(-EROFS, "%s: image is open read-only", img->path);
	if (img->fmt == UQ_FMT_QCOW2 && !img->writable)
		return uq_seterr(-EROFS, "%s: image is marked corrupt or failed; "
				 "no more writes", img->path);
	if (off > img->size || img->size - off < len)
		return uq_seterr(-EINVAL, "%s: write at 0x%llx+%llu is past the virtual "
				 "size %llu", img->path, (unsigned long long)off,
				 (unsigned long long)len, (unsigned long long)img->size);
	return 0;
}

static int submit(uq_image *img, enum wkind kind, const uint8_t *buf, uint64_t len,
		  uint64_t off, unsigned flags, uq_done_fn cb, void *arg)
{
	struct wreq *wr;
	uint64_t unit, done = 0;
	int ret;

	uq_errclear();   /* a failure below must not show an older message */
	ret = check_writable(img, off, len);

	if (ret < 0)
		return ret;
	wr = calloc(1, sizeof(*wr));
	if (wr)
		wr->d = calloc(1, sizeof(*wr->d));
	if (!wr || !wr->d) {
		free(wr);
		return -ENOMEM;
	}
	wr->img = img;
	wr->d->cb = cb;
	wr->d->arg = arg;
	wr->d->ctx = img->ctx;
	wr->len = (size_t)len;
	wr->pending = 1;
	unit = img->fmt == UQ_FMT_QCOW2 ? csz(img) : (1u << 20);
	while (done < len && ret == 0) {
		uint64_t pos = off + done;
		size_t n = (size_t)(unit - (pos & (unit - 1)));

		if (n > len - done)
			n = (size_t)(len - done);
		if (img->fmt != UQ_FMT_QCOW2) {
			/* raw: plain file I/O */
			ret = kind == W_DATA ? write_in_place(wr, buf + done, n, pos) : 0;
			if (kind == W_ZERO) {
				uint8_t *z = calloc(1, n);

				ret = z ? io_pwrite_full(img->data, z, n, pos) : -ENOMEM;
				free(z);
			}
		} else if (kind == W_DATA && (flags & UQ_WRITE_COMPRESSED)) {
			ret = write_compressed(wr, buf + done, pos, n);
		} else if (kind == W_DATA) {
			ret = img->g.extended_l2 ? write_subclusters(wr, buf + done, pos, n)
						 : write_cluster(wr, buf + done, pos, n);
		} else if (kind == W_ZERO) {
			ret = zero_cluster(wr, pos, n, flags);
		} else {
			ret = discard_cluster(wr, pos, n);
		}
		done += n;
	}
	if (ret < 0) {
		wr->err = ret;
		if (ret == -EIO || ret == -ENOSPC)
			img->writable = img->writable && ret != -EIO;
	}
	wreq_put(wr);
	return 0;
}

int uq_aio_write(uq_image *img, const void *buf, size_t len, uint64_t off,
		 unsigned flags, uq_done_fn cb, void *arg)
{
	return submit(img, W_DATA, buf, len, off, flags, cb, arg);
}

int uq_aio_write_zeroes(uq_image *img, uint64_t off, uint64_t len, unsigned flags,
			uq_done_fn cb, void *arg)
{
	return submit(img, W_ZERO, NULL, len, off, flags, cb, arg);
}

int uq_aio_discard(uq_image *img, uint64_t off, uint64_t len, uq_done_fn cb, void *arg)
{
	return submit(img, W_DISCARD, NULL, len, off, 0, cb, arg);
}

static int wait_flag(uq_image *img, struct sync_flag *f)
{
	while (!f->done) {
		int ret = uq_poll(img, 1);

		if (ret < 0)
			return ret;
		if (ret == 0 && !f->done)
			return uq_seterr(-EIO, "%s: request stalled", img->path);
	}
	return 0;
}

ssize_t uq_pwrite(uq_image *img, const void *buf, size_t len, uint64_t off, unsigned flags)
{
	struct sync_flag f = { 0 };
	int ret = uq_aio_write(img, buf, len, off, flags, flag_done, &f);

	if (ret == 0)
		ret = wait_flag(img, &f);
	return ret < 0 ? ret : f.res;
}

int uq_write_zeroes(uq_image *img, uint64_t off, uint64_t len, unsigned flags)
{
	struct sync_flag f = { 0 };
	int ret = uq_aio_write_zeroes(img, off, len, flags, flag_done, &f);

	if (ret == 0)
		ret = wait_flag(img, &f);
	return ret < 0 ? ret : f.res < 0 ? (int)f.res : 0;
}

int uq_discard(uq_image *img, uint64_t off, uint64_t len)
{
	struct sync_flag f = { 0 };
	int ret = uq_aio_discard(img, off, len, flag_done, &f);

	if (ret == 0)
		ret = wait_flag(img, &f);
	return ret < 0 ? ret : f.res < 0 ? (int)f.res : 0;
}

/* ---- flush ---- */

static int write_l2(void *arg, uint64_t off, const uint8_t *tab)
{
	uq_image *img = arg;
	int ret = io_pwrite_full(img->file, tab, csz(img), off);

	if (ret == 0)
		l2c_clean(img->l2c, off);
	return ret;
}

static int write_l1(uq_image *img)
{
	size_t bytes = (size_t)img->h.l1_size * 8;
	uint8_t *raw = malloc(bytes ? bytes : 1);
	int ret;

	if (!raw)
		return -ENOMEM;
	for (uint32_t i = 0; i < img->h.l1_size; i++)
		uq_put_be64(raw + (size_t)i * 8, img->l1[i]);
	ret = io_pwrite_full(img->file, raw, bytes, img->h.l1_table_offset);
	free(raw);
	return ret;
}

static bool rb_dirty(const uq_image *img)
{
	for (uint64_t i = 0; i < img->reftable_entries; i++)
		if (img->rb_dirty[i])
			return true;
	return img->reftable_dirty;
}

static int set_dirty_bit(uq_image *img, bool on)
{
	uint8_t f[8];
	uint64_t v = on ? img->h.incompatible_features | QCOW_INCOMPAT_DIRTY
			: img->h.incompatible_features & ~QCOW_INCOMPAT_DIRTY;
	int ret;

	if (v == img->h.incompatible_features)
		return 0;
	uq_put_be64(f, v);
	ret = uq_header_write_field(img, 72, f, 8);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret == 0)
		img->h.incompatible_features = v;
	return ret;
}

/* Data, then refcount increases, then L2 tables, then L1, then the
 * refcount decreases of what the new L2 entries no longer reference. */
int uq_meta_flush(uq_image *img)
{
	bool l2;
	int ret = 0;

	/* data before the L2 entries that point at it */
	while (img->writes_inflight && ret >= 0)
		ret = io_reap(img->ctx->q, 1);
	if (ret < 0)
		return ret;
	ret = 0;   /* io_reap counted completions */
	if (!img->writable)   /* a data write failed: its L2 entry must stay off disk */
		return uq_seterr(-EIO, "%s: a data write failed; metadata is not written",
				 img->path);
	l2 = l2c_dirty_count(img->l2c) > 0;
	if (!l2 && !img->l1_dirty && !img->nfrees && !(img->lazy ? false : rb_dirty(img))) {
		/* no metadata, but data written in place must be durable too */
		ret = io_fsync(img->data);
		return ret < 0 ? uq_seterr(ret, "%s: flush failed: %s", img->path,
					   strerror(-ret)) : 0;
	}
	if (img->lazy)
		ret = set_dirty_bit(img, true);
	if (ret == 0 && img->data != img->file)
		ret = io_fsync(img->data);
	if (ret == 0 && !img->lazy)
		ret = uq_rc_write_dirty(img);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret == 0 && l2)
		ret = l2c_for_each_dirty(img->l2c, write_l2, img);
	if (ret == 0 && img->l1_dirty) {
		ret = io_fsync(img->file);
		if (ret == 0)
			ret = write_l1(img);
		img->l1_dirty = false;
	}
	if (ret == 0 && img->nfrees) {
		ret = io_fsync(img->file);
		if (ret == 0)
			ret = uq_rc_apply_frees(img);
		img->comp_next = 0;   /* its cluster may have been freed */
		if (ret == 0 && !img->lazy)
			ret = uq_rc_write_dirty(img);
	}
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0) {
		img->writable = false;
		return uq_seterr(ret, "%s: writing metadata failed: %s", img->path,
				 strerror(-ret));
	}
	return 0;
}

int uq_flush(uq_image *img)
{
	int ret;

	if (!(img->flags & UQ_OPEN_RDWR))
		return 0;
	if (img->fmt != UQ_FMT_QCOW2) {
		while (io_pending(img->ctx->q))
			if (io_reap(img->ctx->q, 1) < 0)
				break;
		return io_fsync(img->file);
	}
	if (!img->writable)
		return uq_seterr(-EIO, "%s: image can't be written", img->path);
	ret = uq_meta_flush(img);
	return ret;
}

int uq_aio_flush(uq_image *img, uq_done_fn cb, void *arg)
{
	struct uq_done *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->cb = cb;
	d->arg = arg;
	d->ctx = img->ctx;
	d->res = uq_flush(img);
	uq_ctx_complete(img->ctx, d);
	return 0;
}

/* ---- open and close ---- */

int uq_write_open(uq_image *img)
{
	uint64_t known = QCOW_AUTOCLEAR_DATA_FILE_RAW;
	int ret;

	img->host_end = (img->file_size + csz(img) - 1) & ~(csz(img) - 1);
	img->written_end = img->host_end;
	img->free_hint = 1;
	img->lazy = img->h.compatible_features & QCOW_COMPAT_LAZY_REFCOUNTS;
	ret = uq_rc_load(img);
	if (ret == 0)
		ret = uq_meta_build(img);
	if (ret < 0)
		return ret;
	/* Bits we don't maintain (bitmaps included) are cleared before the
	 * first write, as the spec requires of autoclear features. */
	if (img->h.version >= 3 && (img->h.autoclear_features & ~known)) {
		uint8_t f[8];

		img->h.autoclear_features &= known;
		uq_put_be64(f, img->h.autoclear_features);
		ret = uq_header_write_field(img, 88, f, 8);
		if (ret == 0)
			ret = io_fsync(img->file);
		if (ret < 0)
			return ret;
	}
	img->writable = true;
	if (img->h.incompatible_features & QCOW_INCOMPAT_DIRTY) {
		uint64_t *counts, n;

		/* refcounts may be behind the L2 tables: rebuild them */
		ret = uq_count_refs(img, &counts, &n);
		if (ret == 0) {
			ret = uq_rc_rebuild(img, counts, n, img->h.refcount_order);
			free(counts);
		}
		if (ret == 0)
			ret = set_dirty_bit(img, false);
		if (ret < 0)
			return uq_seterr(ret, "repairing refcounts of a dirty image: %s",
					 uq_errmsg());
	}
	return 0;
}

int uq_write_close(uq_image *img)
{
	int ret;

	if (!img->writable)
		return 0;
	ret = uq_meta_flush(img);
	if (ret == 0 && img->lazy) {
		ret = uq_rc_write_dirty(img);
		if (ret == 0)
			ret = io_fsync(img->file);
		if (ret == 0)
			ret = set_dirty_bit(img, false);
	}
	return ret;
}

/* ---- preallocation ---- */

/* Map every guest cluster to a host cluster (L2 tables included); falloc
 * and full also reserve or zero the space. Reads still return zeros: a
 * fresh cluster past the old end of file is a hole. */
int uq_preallocate(uq_image *img, enum uq_prealloc mode)
{
	uint64_t cs = csz(img), first = UINT64_MAX;
	struct io_file *f = img->data;
	int ret = 0;

	for (uint64_t off = 0; off < img->size && ret == 0; off += cs) {
		uint64_t host;
		bool fresh;

		ret = alloc_data(img, off, &host, &fresh);
		if (ret == 0)
			ret = set_entry(img, off, host | QCOW_OFLAG_COPIED,
					img->g.extended_l2 ? sc_in_image(img, off) : 0);
		if (host < first)
			first = host;
	}
	if (ret == 0)
		ret = uq_meta_flush(img);
	uint64_t end = img->g.external_data ? img->size : img->host_end;

	if (ret == 0 && first != UINT64_MAX) {
		uint64_t size;

		ret = io_file_size(f, &size);
		if (ret == 0 && size < end)
			ret = io_file_truncate(f, end);
		if (ret == 0 && mode == UQ_PREALLOC_FALLOC &&
		    io_file_preallocate(f, first, end - first) < 0)
			ret = uq_seterr(-EIO, "%s: fallocate failed", img->path);
		/* zeros into the data clusters only: L2 tables lie among them */
		for (uint64_t off = 0; ret == 0 && mode == UQ_PREALLOC_FULL && off < img->size;
		     off += cs) {
			static const uint8_t zeros[65536];
			struct uq_l2map m;

			ret = uq_map_entry(img, off, &m);
			for (uint64_t o = 0; ret == 0 && m.host_off && o < cs; o += sizeof(zeros)) {
				size_t n = cs - o < sizeof(zeros) ? (size_t)(cs - o) : sizeof(zeros);

				ret = io_pwrite_full(f, zeros, n, m.host_off + o);
			}
		}
	}
	if (ret == 0)
		img->written_end = img->host_end;
	return ret;
}
