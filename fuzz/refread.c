// SPDX-License-Identifier: MIT
/* The reference reader (refread.h): qcow2 decoded the plain way, one guest
 * cluster at a time, every table read from the image bytes when needed.
 * Written to be obviously right, not fast. Field names and rules follow
 * QEMU's docs/interop/qcow2.txt. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "refread.h"

#define MAX_L1_BYTES (32u << 20)
#define MAX_SNAPSHOTS 65536
#define OFFSET_MASK 0x00fffffffffffe00ull   /* bits 9..55 of L1/L2 entries */
#define L2_COMPRESSED (1ull << 62)
#define L2_ZERO 1ull

struct refread {
	const uint8_t *img;       /* the whole file */
	uint64_t file_size;
	unsigned cluster_bits;
	uint64_t cluster_size;
	uint64_t size;            /* virtual size (of the snapshot when viewing) */
	uint64_t l1_offset;
	uint64_t l1_size;
	bool extended_l2;         /* 16-byte L2 entries with subcluster bitmaps */
	bool zero_flag;           /* v3: bit 0 of an L2 entry means zeros */
	int compression_type;     /* 0 zlib, 1 zstd */
	uint8_t *cluster;         /* one decompressed cluster */
};

static char why[256];

const char *refread_why(void)
{
	return why;
}

static int refuse(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return err;
}

static uint64_t be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* Bytes [off, off+len) of the file, or NULL if they are not all in it. */
static const uint8_t *file_at(const struct refread *r, uint64_t off, uint64_t len)
{
	if (off > r->file_size || len > r->file_size - off)
		return NULL;
	return r->img + off;
}

/* Bytes of the file as a file read gives them: zeros past its end. */
static void copy_file(const struct refread *r, uint8_t *dst, uint64_t off, size_t len)
{
	size_t in = 0;

	if (off < r->file_size)
		in = r->file_size - off < len ? (size_t)(r->file_size - off) : len;
	memcpy(dst, r->img + off, in);
	memset(dst + in, 0, len - in);
}

uint64_t refread_size(const struct refread *r)
{
	return r->size;
}

void refread_close(struct refread *r)
{
	if (r)
		free(r->cluster);
	free(r);
}

/* Point the reader at a snapshot's L1 table and size instead. */
static int use_snapshot(struct refread *r, const uint8_t *h, const char *want)
{
	uint64_t nb = be(h + 60, 4), at = be(h + 64, 8);
	const uint8_t *e;
	int by_name = -1;

	if (nb > MAX_SNAPSHOTS)
		return refuse(-EINVAL, "nb_snapshots: %llu is over %u",
			      (unsigned long long)nb, MAX_SNAPSHOTS);
	if (nb && (at & (r->cluster_size - 1)))
		return refuse(-EINVAL, "snapshots_offset: not cluster aligned");
	/* two passes over the table: an ID match wins over a name match */
	for (int pass = 0; pass < 2; pass++) {
		uint64_t off = at;

		for (uint64_t i = 0; i < nb; i++) {
			uint64_t id_len, name_len, extra, len;

			if (!(e = file_at(r, off, 40)))
				return refuse(-EINVAL, "snapshot %llu: past the end of "
					      "the file", (unsigned long long)i);
			id_len = be(e + 12, 2);
			name_len = be(e + 14, 2);
			extra = be(e + 36, 4);
			len = 40 + extra + id_len + name_len;
			len = (len + 7) & ~7ull;
			if (!(e = file_at(r, off, len)))
				return refuse(-EINVAL, "snapshot %llu: past the end of "
					      "the file", (unsigned long long)i);
			bool match = pass == 0 ?
				strlen(want) == id_len &&
					!memcmp(e + 40 + extra, want, id_len) :
				strlen(want) == name_len &&
					!memcmp(e + 40 + extra + id_len, want, name_len);
			if (match) {
				by_name = 0;
				r->l1_offset = be(e, 8);
				r->l1_size = be(e + 8, 4);
				/* extra data from 16 bytes on holds the disk size */
				if (extra >= 16)
					r->size = be(e + 40 + 8, 8);
				break;
			}
			off += len;
		}
		if (!by_name)
			return 0;
	}
	return refuse(-ENOENT, "snapshot '%s': not in the table", want);
}

int refread_open(const uint8_t *data, size_t size, const char *snap,
		 struct refread **out)
{
	struct refread *r;
	const uint8_t *h = data;
	uint64_t version, hlen = 72, incompat = 0, l2_entries, l2_bytes, need;
	int ret = -EINVAL;

	*out = NULL;
	why[0] = '\0';
	if (size < 72 || be(h, 4) != 0x514649fb)
		return refuse(-EINVAL, "magic: not a qcow2 image");
	version = be(h + 4, 4);
	if (version != 2 && version != 3)
		return refuse(-ENOTSUP, "version: %llu", (unsigned long long)version);
	if (version == 3) {
		if (size < 104)
			return refuse(-EINVAL, "header_length: header cut short");
		incompat = be(h + 72, 8);
		hlen = be(h + 100, 4);
		if (hlen < 104 || hlen > size)
			return refuse(-EINVAL, "header_length: %llu",
				      (unsigned long long)hlen);
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->img = data;
	r->file_size = size;
	r->cluster_bits = (unsigned)be(h + 20, 4);
	if (r->cluster_bits < 9 || r->cluster_bits > 21) {
		ret = refuse(-EINVAL, "cluster_bits: %u", r->cluster_bits);
		goto fail;
	}
	r->cluster_size = 1ull << r->cluster_bits;
	if (hlen > r->cluster_size) {
		ret = refuse(-EINVAL, "header_length: larger than a cluster");
		goto fail;
	}
	if (be(h + 32, 4)) {
		ret = refuse(-ENOTSUP, "crypt_method: encrypted images are not read");
		goto fail;
	}
	/* bits 0 dirty, 1 corrupt (both fine read-only), 2 external data
	 * file, 3 compression type, 4 extended L2 */
	if (incompat & ~0x1full) {
		ret = refuse(-ENOTSUP, "incompatible_features: unknown bits 0x%llx",
			     (unsigned long long)(incompat & ~0x1full));
		goto fail;
	}
	if (incompat & 4) {
		ret = refuse(-ENOTSUP, "incompatible_features: external data file "
			     "(nothing but the image is in memory)");
		goto fail;
	}
	/* autoclear bit 1, raw external data, only with an external data file */
	if (version == 3 && (be(h + 88, 8) & 2)) {
		ret = refuse(-EINVAL, "autoclear_features: raw external data bit "
			     "without an external data file");
		goto fail;
	}
	if (hlen > 104)
		r->compression_type = h[104];
	if (r->compression_type > 1 ||
	    (r->compression_type != 0) != !!(incompat & 8)) {
		ret = refuse(-EINVAL, "compression_type: %d with the compression "
			     "type bit %s", r->compression_type,
			     incompat & 8 ? "set" : "clear");
		goto fail;
	}
	r->extended_l2 = incompat & 16;
	if (r->extended_l2 && r->cluster_bits < 14) {
		ret = refuse(-EINVAL, "incompatible_features: extended L2 needs "
			     "clusters of 16 KiB or more");
		goto fail;
	}
	r->zero_flag = version == 3 && !r->extended_l2;
	r->size = be(h + 24, 8);
	r->l1_size = be(h + 36, 4);
	r->l1_offset = be(h + 40, 8);
	if (snap && (ret = use_snapshot(r, h, snap)) < 0)
		goto fail;

	/* the L1 table: in bounds, aligned, and large enough for the disk */
	l2_bytes = r->extended_l2 ? 16 : 8;
	l2_entries = r->cluster_size / l2_bytes;
	if (r->l1_size > MAX_L1_BYTES / 8) {
		ret = refuse(-EFBIG, "l1_size: %llu entries is over 32 MiB",
			     (unsigned long long)r->l1_size);
		goto fail;
	}
	need = r->size / r->cluster_size / l2_entries +
	       (r->size % (r->cluster_size * l2_entries) != 0);
	/* a snapshot's L1 may be shorter than its disk: the rest of that
	 * disk is unallocated (as QEMU reads it) */
	if (r->size > (1ull << 62) || (!snap && r->l1_size < need)) {
		ret = refuse(-EINVAL, "l1_size: %llu entries don't cover size %llu",
			     (unsigned long long)r->l1_size,
			     (unsigned long long)r->size);
		goto fail;
	}
	if (r->l1_size && ((r->l1_offset & (r->cluster_size - 1)) ||
			   !file_at(r, r->l1_offset, r->l1_size * 8))) {
		ret = refuse(-EINVAL, "l1_table_offset: 0x%llx is unaligned or "
			     "past the end of the file",
			     (unsigned long long)r->l1_offset);
		goto fail;
	}
	r->cluster = malloc(r->cluster_size);
	if (!r->cluster) {
		ret = -ENOMEM;
		goto fail;
	}
	*out = r;
	return 0;
fail:
	refread_close(r);
	return ret;
}

/* Inflate one compressed cluster into r->cluster, the way QEMU does:
 * output exactly one cluster; input may run on past the stream. */
static int inflate_cluster(struct refread *r, const uint8_t *src, size_t slen)
{
	if (r->compression_type == 0) {
		z_stream z;
		int zr;

		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, -12) != Z_OK)
			return -ENOMEM;
		z.next_in = (Bytef *)src;
		z.avail_in = (uInt)slen;
		z.next_out = r->cluster;
		z.avail_out = (uInt)r->cluster_size;
		zr = inflate(&z, Z_FINISH);
		inflateEnd(&z);
		if ((zr == Z_STREAM_END || zr == Z_BUF_ERROR) && z.avail_out == 0)
			return 0;
		return refuse(-EIO, "compressed cluster: zlib data corrupt");
	} else {
		/* one context for the process: creating one per cluster costs
		 * more than all the rest of a read under ASan */
		static ZSTD_DCtx *d;
		ZSTD_inBuffer in = { src, slen, 0 };
		ZSTD_outBuffer out = { r->cluster, r->cluster_size, 0 };
		int ret = 0;

		if (!d && !(d = ZSTD_createDCtx()))
			return -ENOMEM;
		ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
		while (out.pos < out.size && in.pos < in.size) {
			size_t zr = ZSTD_decompressStream(d, &out, &in);

			if (ZSTD_isError(zr) || (zr == 0 && out.pos < out.size)) {
				ret = -EIO;
				break;
			}
		}
		if (ret || out.pos < out.size)
			return refuse(-EIO, "compressed cluster: zstd data corrupt");
		return 0;
	}
}

/* Guest bytes [off, off+len), all inside one cluster. */
static int read_in_cluster(struct refread *r, uint8_t *buf, size_t len, uint64_t off)
{
	uint64_t cs = r->cluster_size, in = off & (cs - 1);
	uint64_t l2_bytes = r->extended_l2 ? 16 : 8, l2_entries = cs / l2_bytes;
	uint64_t cl = off >> r->cluster_bits;
	uint64_t l1_idx = cl / l2_entries, l2_idx = cl % l2_entries;
	uint64_t l1e, l2_off, l2e, bitmap = 0, host;

	if (l1_idx >= r->l1_size) {   /* only in a snapshot's view */
		memset(buf, 0, len);
		return 0;
	}
	l1e = be(r->img + r->l1_offset + l1_idx * 8, 8);
	/* bits 0..8 and 56..62 are reserved and must be zero */
	if (l1e & 0x7f000000000001ffull)
		return refuse(-EIO, "L1 entry %llu: reserved bits set",
			      (unsigned long long)l1_idx);
	l2_off = l1e & OFFSET_MASK;
	if (!l2_off) {                     /* no L2 table: unallocated */
		memset(buf, 0, len);
		return 0;
	}
	if (l2_off & (cs - 1))
		return refuse(-EIO, "L1 entry %llu: L2 offset 0x%llx unaligned",
			      (unsigned long long)l1_idx, (unsigned long long)l2_off);
	/* metadata must lie in the file (data past its end reads as zeros) */
	if (!file_at(r, l2_off, cs))
		return refuse(-EIO, "L1 entry %llu: L2 table past the end of the file",
			      (unsigned long long)l1_idx);
	l2e = be(r->img + l2_off + l2_idx * l2_bytes, 8);
	if (r->extended_l2)
		bitmap = be(r->img + l2_off + l2_idx * l2_bytes + 8, 8);

	if (l2e & L2_COMPRESSED) {
		/* bits 0..x-1 host offset, the rest the sector count - 1 */
		unsigned x = 62 - (r->cluster_bits - 8);
		uint64_t coff = l2e & ((1ull << x) - 1);
		uint64_t sectors = ((l2e >> x) & ((1ull << (r->cluster_bits - 8)) - 1)) + 1;
		uint64_t clen = sectors * 512 - (coff & 511);

		if (r->extended_l2 && bitmap)
			return refuse(-EIO, "L2 entry: compressed cluster with a "
				      "subcluster bitmap");
		/* the spec: "bit 63 must be 0" for a compressed cluster (it
		 * can't be written in place); QEMU doesn't look, both uqcow
		 * readers refuse */
		if (l2e & (1ull << 63))
			return refuse(-EIO, "L2 entry: compressed cluster with the "
				      "COPIED bit set");
		/* the last sectors may lie past the end of the file: they read
		 * as zeros, as any file read does */
		uint8_t *src = malloc((size_t)clen);
		int ret;

		if (!src)
			return -ENOMEM;
		copy_file(r, src, coff, (size_t)clen);
		ret = inflate_cluster(r, src, (size_t)clen);
		free(src);
		if (ret < 0)
			return ret;
		memcpy(buf, r->cluster + in, len);
		return 0;
	}

	/* standard entry: bits 1..8 and 56..61 reserved; bit 0 (zeros) is
	 * always 0 in v2 and with extended L2, whose bitmap says it */
	if (l2e & (0x3f000000000001feull | (r->zero_flag ? 0 : 1)))
		return refuse(-EIO, "L2 entry: reserved bits set");
	host = l2e & OFFSET_MASK;
	if (!r->extended_l2) {
		if (l2e & L2_ZERO) {
			memset(buf, 0, len);
			return 0;
		}
		if (!host) {
			memset(buf, 0, len);
			return 0;
		}
		if (host & (cs - 1))
			return refuse(-EIO, "L2 entry: data offset 0x%llx unaligned",
				      (unsigned long long)host);
		copy_file(r, buf, host + in, len);
		return 0;
	}

	/* extended L2: 32 subclusters, each allocated, zero or neither */
	uint64_t sc_size = cs / 32;
	uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);

	if (alloc & zero)
		return refuse(-EIO, "L2 bitmap: a subcluster both allocated and zero");
	if (alloc && !host)
		return refuse(-EIO, "L2 entry: allocated subclusters without a "
			      "host offset");
	if (host & (cs - 1))
		return refuse(-EIO, "L2 entry: data offset 0x%llx unaligned",
			      (unsigned long long)host);
	for (size_t done = 0; done < len; ) {
		uint64_t at = in + done;
		unsigned sc = (unsigned)(at / sc_size);
		size_t n = (size_t)((sc + 1) * sc_size - at);

		if (n > len - done)
			n = len - done;
		if (alloc >> sc & 1) {
			copy_file(r, buf + done, host + at, n);
		} else {
			memset(buf + done, 0, n);   /* zero, or unallocated */
		}
		done += n;
	}
	return 0;
}

int refread_read(struct refread *r, uint8_t *buf, size_t len, uint64_t off)
{
	if (off > r->size || len > r->size - off)
		return refuse(-EINVAL, "read past the end of the disk");
	while (len) {
		uint64_t in = off & (r->cluster_size - 1);
		size_t n = (size_t)(r->cluster_size - in < len ? r->cluster_size - in : len);
		int ret = read_in_cluster(r, buf, n, off);

		if (ret < 0)
			return ret;
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}
