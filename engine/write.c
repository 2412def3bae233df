// SPDX-License-Identifier: MIT
/* The data paths of one cluster's piece of a request: allocating and in-place
 * writes (standard and subcluster entries), compressed writes, write-zeroes
 * and discard. Metadata changes stay in memory until writeback.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "compress.h"
#include "error.h"
#include "header.h"
#include "overlap.h"
#include "request.h"
#include "stats.h"

/* A data write of a piece on the queue. */
struct wop {
	struct io_req io;
	struct wreq *wr;
};

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }

/* ---- helpers ---- */

static int data_write_sync(uq_image *img, const void *buf, size_t len, uint64_t host)
{
	int ret;

	uq_count_data(img->ctx, true, len);
	ret = io_pwrite_full(img->data, buf, len, host);
	if (ret < 0)
		return uq_seterr(ret, "%s: writing data at 0x%llx failed: %s", img->path,
				 (unsigned long long)host, strerror(-ret));
	if (host + len > img->alloc.written_end)
		img->alloc.written_end = host + len;
	return 0;
}

static void wop_done(struct io_req *io, ssize_t res)
{
	struct wop *op = (struct wop *)io;
	struct wreq *wr = op->wr;
	uq_image *img = wr->img;

	img->writes_inflight--;
	if (res < 0) {
		/* An L2 entry may already point at the cluster this write was
		 * to fill: stop writing so that entry never reaches the disk. */
		uq_stop_writes(wr->img, "a data write failed");
		uq_seterr((int)res, "%s: writing data at 0x%llx failed: %s; no further "
			  "writes until the image is reopened", wr->img->path,
			  (unsigned long long)io->off, strerror((int)-res));
		if (!wr->err)
			wr->err = (int)res;
	}
	free(op);
	uq_wreq_put(wr);
	uq_flush_kick(img);   /* a flush may wait for the last data write */
}

/* Rewrite in place: goes out on the queue, completes asynchronously. */
int uq_write_in_place(struct wreq *wr, const uint8_t *buf, size_t len, uint64_t host)
{
	uq_image *img = wr->img;
	struct wop *op;

	/* an external data file, or a raw image, holds no metadata: its
	 * offsets are the guest's (and a raw image has no cluster size) */
	if (img->fmt == UQ_FMT_QCOW2 && img->data == img->file &&
	    uq_meta_overlaps(img, host, len))
		return uq_mark_corrupt(img, "guest data", host);
	op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->wr = wr;
	op->io = (struct io_req){ .op = IO_WRITE, .file = img->data, .buf = (void *)buf,
				  .len = len, .off = host, .done = wop_done };
	wr->pending++;
	img->writes_inflight++;
	if (host + len > img->alloc.written_end)
		img->alloc.written_end = host + len;
	uq_count_data(img->ctx, true, len);
	io_queue_req(img->ctx->q, &op->io);
	return 0;
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
		return uq_write_in_place(wr, buf, len, m.host_off + intra);

	/* a preallocated zero cluster we own is reused */
	if (m.type == UQ_C_ZERO && m.host_off && m.copied) {
		host = m.host_off;
		fresh = false;
	} else {
		ret = uq_alloc_data(img, cstart, &host, &fresh);
		if (ret < 0)
			return ret;
	}
	if (fresh && uq_reads_zero(img, &m)) {
		/* A never-written cluster reads zeros around the data, and
		 * until the data lands it reads zeros like the old mapping did:
		 * the L2 entry may change now and the write complete later
		 * (flush waits for it before any L2 table reaches the disk). */
		ret = uq_write_in_place(wr, buf, len, host + intra);
	} else if (len == glen) {
		ret = data_write_sync(img, buf, len, host);
	} else {
		uint8_t *c = malloc(glen);

		if (!c)
			return -ENOMEM;
		if (uq_reads_zero(img, &m)) {
			memset(c, 0, glen);
			ret = 0;
		} else {
			uq_count(img->ctx, UQ_STAT_COW_COPIES, 1);
			ret = uq_internal_pread(img, c, glen, cstart);
		}
		if (ret == 0) {
			memcpy(c + intra, buf, len);
			ret = data_write_sync(img, c, glen, host);
		}
		free(c);
	}
	if (ret == 0)
		ret = uq_l2_set(img, off, host | QCOW_OFLAG_COPIED, 0);
	if (ret == 0)
		ret = uq_mapping_release(img, &m, host);
	return ret;
}

/* ---- extended L2 entries (subclusters) ---- */

static int write_subclusters(struct wreq *wr, const uint8_t *buf, uint64_t off, size_t len)
{
	uq_image *img = wr->img;
	uint64_t cs = csz(img), intra = off & (cs - 1), cstart = off - intra;
	uint64_t scs = 1ull << img->g.subcluster_bits;
	unsigned first = (unsigned)(intra / scs), last = (unsigned)((intra + len - 1) / scs);
	struct uq_l2map m;
	uint64_t host, span_start, span_end;
	uint32_t alloc, zero, touched = uq_sc_mask(first, last);
	bool fresh = false, whole;
	uint8_t *c = NULL;
	int ret;

	ret = uq_map_entry(img, off, &m);
	if (ret < 0)
		return ret;
	bool owned = m.type == UQ_C_SUBCLUSTERS && m.host_off && m.copied;

	/* in place when every touched subcluster is already allocated here */
	if (owned && (m.alloc_mask & touched) == touched)
		return uq_write_in_place(wr, buf, len, m.host_off + intra);
	/* a new host cluster must carry over what the old one held */
	whole = !owned && (m.type == UQ_C_COMPRESSED ||
			   (m.type == UQ_C_SUBCLUSTERS && m.alloc_mask));
	if (owned) {
		host = m.host_off;
	} else {
		ret = uq_alloc_data(img, cstart, &host, &fresh);
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
		uq_count(img->ctx, UQ_STAT_COW_COPIES, 1);
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
		alloc = uq_sc_in_image(img, cstart);
		zero = 0;
	} else {
		alloc = (owned ? m.alloc_mask : 0) |
			uq_sc_mask((unsigned)(span_start / scs), (unsigned)((span_end - 1) / scs));
		zero = (m.type == UQ_C_SUBCLUSTERS ? m.zero_mask : 0) & ~alloc;
	}
	(void)fresh;
	ret = uq_l2_set(img, off, host | QCOW_OFLAG_COPIED, ((uint64_t)zero << 32) | alloc);
	if (ret == 0 && !owned)
		ret = uq_mapping_release(img, &m, host);
	return ret;
}

/* ---- compressed clusters ---- */

int uq_write_compressed(struct wreq *wr, const uint8_t *buf, uint64_t off, size_t len)
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
	n = uq_compress(&img->ctx->codec, img->h.compression_type, plain, cs, z, cs - 512);
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
		ret = uq_alloc_compressed(img, (uint64_t)n, &coff);
	if (ret == 0)
		ret = data_write_sync(img, z, (size_t)n, coff);
	if (ret == 0) {
		uq_count(img->ctx, UQ_STAT_COMPRESSED_WRITES, 1);
		ret = uq_l2_set(img, off, uq_l2_encode_compressed(&img->g, coff, (uint64_t)n), 0);
	}
	if (ret == 0)
		ret = uq_mapping_release(img, &m, UINT64_MAX);
out:
	free(plain);
	free(z);
	return ret;
}

/* ---- zeroing and discard ---- */

/* Does discard-no-unref keep this mapping? Only a cluster this image owns
 * alone: a shared one (snapshot) is released as usual, since writing into
 * it later copies it anyway, and a compressed one can't be written in
 * place. */
static bool no_unref_keeps(const uq_image *img, const struct uq_l2map *m)
{
	return (img->flags & UQ_OPEN_DISCARD_NO_UNREF) && m->host_off && m->copied &&
	       (m->type == UQ_C_NORMAL || m->type == UQ_C_ZERO || m->type == UQ_C_SUBCLUSTERS);
}

int uq_zero_piece(struct wreq *wr, uint64_t off, size_t len, unsigned flags)
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
	if ((flags & UQ_ZERO_UNMAP) && no_unref_keeps(img, &m))
		flags &= ~UQ_ZERO_UNMAP;   /* discard-no-unref: keep the cluster */
	if (uq_reads_zero(img, &m) && !(full && (flags & UQ_ZERO_UNMAP) && m.host_off))
		return 0;
	bool raw_data = img->h.autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW;

	if (full && img->h.version >= 3 && !img->g.extended_l2 && !raw_data) {
		bool keep = !(flags & UQ_ZERO_UNMAP) && m.host_off && m.copied &&
			    (m.type == UQ_C_NORMAL || m.type == UQ_C_ZERO);
		uint64_t host = keep ? m.host_off : 0;

		ret = uq_l2_set(img, off, host ? host | QCOW_OFLAG_COPIED | QCOW_OFLAG_ZERO
					      : QCOW_OFLAG_ZERO, 0);
		return ret ? ret : uq_mapping_release(img, &m, host);
	}
	if (full && img->g.extended_l2 && !raw_data && m.type != UQ_C_COMPRESSED) {
		bool keep = !(flags & UQ_ZERO_UNMAP) && m.host_off && m.copied &&
			    m.type == UQ_C_SUBCLUSTERS;
		uint64_t host = keep ? m.host_off : 0;

		ret = uq_l2_set(img, off, host ? host | QCOW_OFLAG_COPIED : 0,
				(uint64_t)uq_sc_in_image(img, cstart) << 32);
		return ret ? ret : uq_mapping_release(img, &m, host);
	}
	if (full && img->h.version < 3 && !img->backing && !raw_data) {
		/* v2 has no zero flag: without a backing file, unallocated reads zeros */
		ret = uq_l2_set(img, off, 0, 0);
		return ret ? ret : uq_mapping_release(img, &m, 0);
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

/* discard-no-unref: the cluster stays ours, marked zero; its bytes may go
 * back to the file system now (reads of a zero entry never look at them,
 * and a crash before the entry is written leaves a discarded range
 * reading zeros, which a discard allows). Punches of neighbouring
 * clusters of one request are merged. */
static int punch_kept(struct wreq *wr, uint64_t host)
{
	uq_image *img = wr->img;

	if (img->flags & UQ_OPEN_KEEP_DISCARDED)
		return 0;
	if (wr->punch_len && wr->punch_off + wr->punch_len == host) {
		wr->punch_len += csz(img);
		return 0;
	}
	int ret = uq_punch_kept_flush(wr);

	wr->punch_off = host;
	wr->punch_len = csz(img);
	return ret;
}

int uq_punch_kept_flush(struct wreq *wr)
{
	uint64_t len = wr->punch_len;

	wr->punch_len = 0;
	return uq_punch(wr->img, wr->img->data, wr->punch_off, len,
			"releasing discarded clusters");
}

int uq_discard_piece(struct wreq *wr, uint64_t off, size_t len)
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
	if (no_unref_keeps(img, &m)) {
		uint32_t all = uq_sc_in_image(img, cstart);

		if (img->g.extended_l2)
			ret = uq_l2_set(img, off, m.host_off | QCOW_OFLAG_COPIED, (uint64_t)all << 32);
		else
			ret = uq_l2_set(img, off, m.host_off | QCOW_OFLAG_COPIED | QCOW_OFLAG_ZERO, 0);
		return ret ? ret : punch_kept(wr, m.host_off);
	}
	if (img->g.extended_l2)
		ret = uq_l2_set(img, off, 0,
				keep_zero ? (uint64_t)uq_sc_in_image(img, cstart) << 32 : 0);
	else
		ret = uq_l2_set(img, off, keep_zero ? QCOW_OFLAG_ZERO : 0, 0);
	return ret ? ret : uq_mapping_release(img, &m, 0);
}

uint64_t uq_discard_table_span(const uq_image *img, uint64_t off, uint64_t len)
{
	uint64_t span = (uint64_t)img->g.l2_entries << img->g.cluster_bits;
	uint64_t end = off + span < img->size ? off + span : img->size;

	/* with a backing file discarded clusters must read zeros, which only
	 * entries can say; external data clusters aren't ours to free */
	if (img->backing || img->g.external_data || (img->flags & UQ_OPEN_DISCARD_NO_UNREF) ||
	    (off & (span - 1)) || off + len < end)
		return 0;
	return end - off;
}

/* A discard that covers all an L2 table maps: instead of zeroing every
 * entry and writing the table, drop each mapping's reference, clear the
 * L1 entry and free the table itself. The frees wait, as always, until
 * the new L1 is durable; until then the old table on disk is still whole
 * and its clusters still allocated, so a crash leaves the old mapping.
 * The freed table sits next to the data it mapped, so the frees merge
 * into one punch where per-entry discards punch once per table. */
static int release_mapping(uq_image *img, const struct uq_l2map *m, void *arg)
{
	(void)arg;
	return uq_mapping_release(img, m, 0);
}

int uq_discard_table(uq_image *img, uint64_t off)
{
	uint64_t l2_off;
	int ret = uq_map_table(img, off, release_mapping, NULL, &l2_off);

	if (ret < 0 || !l2_off)
		return ret;
	img->l1[uq_cluster_of(img, off) >> img->g.l2_bits] = 0;
	img->l1_dirty = true;
	l2c_invalidate(img->l2c, l2_off);
	uq_count(img->ctx, UQ_STAT_L2_TABLES_FREED, 1);
	ret = uq_rc_free_later(img, l2_off, csz(img));
	/* nothing else flushes a run of drops: bound what they defer */
	return ret ? ret : uq_frees_bound(img);
}

/* A plain or subcluster write of one cluster's piece. */
int uq_write_piece(struct wreq *wr, const uint8_t *buf, uint64_t off, size_t len)
{
	return wr->img->g.extended_l2 ? write_subclusters(wr, buf, off, len)
				      : write_cluster(wr, buf, off, len);
}

void uq_wreq_put(struct wreq *wr)
{
	if (--wr->pending)
		return;
	wr->d->res = wr->err ? wr->err : (ssize_t)wr->len;
	uq_ctx_complete(wr->img->ctx, wr->d);
	free(wr);
}
