// SPDX-License-Identifier: MIT
/* qcow2 on-disk codecs: the header and its extensions (entries.c has the
 * table entries). Pure functions over caller buffers. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "format.h"

_Static_assert(QCOW_HDR_INCOMPAT == QCOW_V2_HEADER_LEN, "v2 header ends at 72");
_Static_assert(QCOW_HDR_COMPRESSION == QCOW_V3_HEADER_LEN, "v3 base header is 104");

#define SNAP_FIXED 40u          /* fixed part of a snapshot table entry */
#define FEATURE_ENTRY 48u       /* one feature name table entry */
#define FEATURE_NAME_MAX 46u    /* name bytes in a feature table entry */
#define BITMAPS_EXT_LEN 24u
#define CRYPTO_EXT_LEN 16u
#define MAX_BITMAPS 65535u      /* QEMU's limit on bitmaps per image */
/* A bitmap directory entry is at most ~1 KiB (name <= 1023 plus the fixed
 * part), so this bounds the directory the caller may have to load. */
#define MAX_BITMAP_DIR (MAX_BITMAPS * 1024ull)

_Static_assert(sizeof(((struct uq_exts *)0)->feature_names[0][0]) ==
	       FEATURE_NAME_MAX + 2, "feature name buffer holds 46 + NUL");

static bool cluster_aligned(uint64_t v, uint64_t csize)
{
	return (v & (csize - 1)) == 0;
}

static uint64_t round_up8(uint64_t v)
{
	return (v + 7) & ~7ull;
}

int uq_check_table(const char *field, const char *what, uint64_t off,
		       uint64_t bytes, uint64_t csize, uint64_t file_size)
{
	uint64_t end;

	if (!cluster_aligned(off, csize))
		return uq_seterr(-EINVAL, "%s 0x%" PRIx64
				 " is not cluster aligned", field, off);
	/* an empty table (l1_size 0 on an empty disk) holds no bytes that
	 * could lie past the end; qemu checks only its alignment too */
	if (bytes && (__builtin_add_overflow(off, bytes, &end) || end > file_size))
		return uq_seterr(-EINVAL, "%s (offset 0x%" PRIx64 ", %" PRIu64
				 " bytes) extends past end of file (%" PRIu64
				 ")", what, off, bytes, file_size);
	return 0;
}

int uq_l1_entries_for(uint64_t size, uint32_t cluster_bits, bool extended_l2,
		      uint64_t *entries)
{
	uint32_t shift, l2_bits;
	uint64_t n;

	if (cluster_bits < QCOW_MIN_CLUSTER_BITS ||
	    cluster_bits > QCOW_MAX_CLUSTER_BITS)
		return uq_seterr(-EINVAL, "cluster_bits %u is outside %d..%d",
				 cluster_bits, QCOW_MIN_CLUSTER_BITS,
				 QCOW_MAX_CLUSTER_BITS);
	l2_bits = cluster_bits - (extended_l2 ? 4 : 3);
	shift = cluster_bits + l2_bits;         /* bytes mapped per L1 entry */
	/* Divide before rounding up, so size near 2^64 cannot wrap. */
	n = (size >> shift) + ((size & ((1ull << shift) - 1)) != 0);
	if (n > UINT32_MAX)
		return uq_seterr(-EFBIG, "size %" PRIu64 " needs %" PRIu64
				 " L1 entries, more than l1_size can hold",
				 size, n);
	*entries = n;
	return 0;
}

/* Fields that exist only in v3 headers. */
static int decode_v3_fields(const uint8_t *buf, size_t len, uint64_t csize,
			    struct uq_header *h)
{
	if (len < QCOW_V3_HEADER_LEN)
		return uq_seterr(-EINVAL, "v3 header needs %u bytes, only %zu "
				 "available", QCOW_V3_HEADER_LEN, len);
	h->incompatible_features = uq_be64(buf + QCOW_HDR_INCOMPAT);
	h->compatible_features = uq_be64(buf + QCOW_HDR_COMPAT);
	h->autoclear_features = uq_be64(buf + QCOW_HDR_AUTOCLEAR);
	h->refcount_order = uq_be32(buf + QCOW_HDR_REFCOUNT_ORDER);
	h->header_length = uq_be32(buf + QCOW_HDR_HEADER_LENGTH);

	if (h->header_length < QCOW_V3_HEADER_LEN)
		return uq_seterr(-EINVAL, "header_length %u is below the "
				 "v3 minimum %u", h->header_length,
				 QCOW_V3_HEADER_LEN);
	if (h->header_length % 8)
		return uq_seterr(-EINVAL, "header_length %u is not a multiple "
				 "of 8", h->header_length);
	if (h->header_length > csize)
		return uq_seterr(-EINVAL, "header_length %u exceeds the "
				 "cluster size %" PRIu64, h->header_length,
				 csize);
	if (h->header_length > len)
		return uq_seterr(-EINVAL, "header_length %u runs past the %zu "
				 "bytes available", h->header_length, len);
	if (h->refcount_order > 6)
		return uq_seterr(-EINVAL, "refcount_order %u exceeds 6",
				 h->refcount_order);

	/* compression_type is present only when the header reaches it. */
	if (h->header_length > QCOW_V3_HEADER_LEN)
		h->compression_type = buf[QCOW_HDR_COMPRESSION];
	if (h->incompatible_features & QCOW_INCOMPAT_COMPRESSION) {
		if (h->header_length <= QCOW_V3_HEADER_LEN)
			return uq_seterr(-EINVAL, "compression_type is absent "
					 "but its incompatible bit is set");
		if (h->compression_type == QCOW_COMPRESS_ZLIB)
			return uq_seterr(-EINVAL, "compression_type 0 with its "
					 "incompatible bit set (must be "
					 "nonzero)");
		if (h->compression_type != QCOW_COMPRESS_ZSTD)
			return uq_seterr(-EINVAL, "compression_type %u is "
					 "unknown", h->compression_type);
	} else if (h->compression_type != QCOW_COMPRESS_ZLIB) {
		return uq_seterr(-EINVAL, "compression_type %u without its "
				 "incompatible bit (3)", h->compression_type);
	}
	if ((h->incompatible_features & QCOW_INCOMPAT_EXTL2) &&
	    h->cluster_bits < 14)
		return uq_seterr(-EINVAL, "extended L2 entries need "
				 "cluster_bits >= 14, got %u",
				 h->cluster_bits);
	if ((h->autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW) &&
	    !(h->incompatible_features & QCOW_INCOMPAT_DATA_FILE))
		return uq_seterr(-EINVAL, "autoclear data-file-raw bit set "
				 "without the external data file bit");
	return 0;
}

static int check_l1(const struct uq_header *h, uint64_t csize,
		    uint64_t file_size)
{
	uint64_t entries;
	bool ext = h->incompatible_features & QCOW_INCOMPAT_EXTL2;
	int ret;

	/* Guest offsets must stay below 2^63 with a whole cluster spare. */
	if (h->size > (1ull << 63) - csize)
		return uq_seterr(-EFBIG, "size %" PRIu64 " exceeds 2^63 - "
				 "cluster size", h->size);
	ret = uq_l1_entries_for(h->size, h->cluster_bits, ext, &entries);
	if (ret < 0)
		return ret;
	if (h->l1_size < entries)
		return uq_seterr(-EINVAL, "l1_size %u is below the %" PRIu64
				 " entries that size %" PRIu64 " needs",
				 h->l1_size, entries, h->size);
	if ((uint64_t)h->l1_size * 8 > QCOW_MAX_L1_BYTES)
		return uq_seterr(-EFBIG, "l1_size %u exceeds the 32 MiB L1 "
				 "limit", h->l1_size);
	if (h->l1_size > 0 && h->l1_table_offset == 0)
		return uq_seterr(-EINVAL, "l1_table_offset is 0 with l1_size "
				 "%u", h->l1_size);
	return uq_check_table("l1_table_offset", "l1 table", h->l1_table_offset,
			   (uint64_t)h->l1_size * 8, csize, file_size);
}

static int check_reftable(const struct uq_header *h, uint64_t csize,
			  uint64_t file_size)
{
	uint64_t bytes;

	if (h->refcount_table_offset == 0)
		return uq_seterr(-EINVAL, "refcount_table_offset is 0");
	if (h->refcount_table_clusters == 0)
		return uq_seterr(-EINVAL, "refcount_table_clusters is 0");
	if (__builtin_mul_overflow((uint64_t)h->refcount_table_clusters,
				   csize, &bytes) ||
	    bytes > QCOW_MAX_REFTABLE_BYTES)
		return uq_seterr(-EFBIG, "refcount_table_clusters %u exceeds "
				 "the 8 MiB limit", h->refcount_table_clusters);
	return uq_check_table("refcount_table_offset", "refcount table",
			   h->refcount_table_offset, bytes, csize, file_size);
}

static int check_snapshots_backing(const struct uq_header *h, size_t len,
				   uint64_t csize, uint64_t file_size)
{
	uint64_t end;
	int ret;

	if (h->nb_snapshots > QCOW_MAX_SNAPSHOTS)
		return uq_seterr(-EFBIG, "nb_snapshots %u exceeds %u",
				 h->nb_snapshots, QCOW_MAX_SNAPSHOTS);
	if (h->nb_snapshots > 0) {
		if (h->snapshots_offset == 0)
			return uq_seterr(-EINVAL, "snapshots_offset is 0 with "
					 "nb_snapshots %u", h->nb_snapshots);
		/* Every entry has at least the 40-byte fixed part; the exact
		 * length is known only when the table is walked. */
		ret = uq_check_table("snapshots_offset", "snapshot table",
				  h->snapshots_offset,
				  (uint64_t)h->nb_snapshots * SNAP_FIXED,
				  csize, file_size);
		if (ret < 0)
			return ret;
	}

	if (h->backing_file_offset == 0)
		return 0;
	if (h->backing_file_size == 0 ||
	    h->backing_file_size > QCOW_MAX_BACKING_NAME)
		return uq_seterr(-EINVAL, "backing_file_size %u is outside "
				 "1..%u", h->backing_file_size,
				 QCOW_MAX_BACKING_NAME);
	if (h->backing_file_offset < h->header_length)
		return uq_seterr(-EINVAL, "backing_file_offset 0x%" PRIx64
				 " lies inside the %u-byte header",
				 h->backing_file_offset, h->header_length);
	if (__builtin_add_overflow(h->backing_file_offset,
				   (uint64_t)h->backing_file_size, &end) ||
	    end > csize)
		return uq_seterr(-EINVAL, "backing_file_offset 0x%" PRIx64
				 " + backing_file_size %u runs past the header "
				 "cluster", h->backing_file_offset,
				 h->backing_file_size);
	if (end > len)
		return uq_seterr(-EINVAL, "backing file name (offset 0x%"
				 PRIx64 ", %u bytes) runs past the %zu bytes "
				 "available", h->backing_file_offset,
				 h->backing_file_size, len);
	return 0;
}

int uq_header_decode(const uint8_t *buf, size_t len, uint64_t file_size,
		     struct uq_header *h)
{
	uint64_t csize;
	int ret;

	memset(h, 0, sizeof(*h));
	if (len < 4)
		return uq_seterr(-EINVAL, "header is %zu bytes, too short for "
				 "the magic", len);
	h->magic = uq_be32(buf + QCOW_HDR_MAGIC);
	if (h->magic != QCOW_MAGIC)
		return uq_seterr(-EINVAL, "magic 0x%08x is not qcow2 (0x%08x)",
				 h->magic, QCOW_MAGIC);
	if (len < QCOW_V2_HEADER_LEN)
		return uq_seterr(-EINVAL, "header is %zu bytes, shorter than "
				 "the %u-byte v2 header", len,
				 QCOW_V2_HEADER_LEN);
	h->version = uq_be32(buf + QCOW_HDR_VERSION);
	h->backing_file_offset = uq_be64(buf + QCOW_HDR_BACKING_OFFSET);
	h->backing_file_size = uq_be32(buf + QCOW_HDR_BACKING_SIZE);
	h->cluster_bits = uq_be32(buf + QCOW_HDR_CLUSTER_BITS);
	h->size = uq_be64(buf + QCOW_HDR_SIZE);
	h->crypt_method = uq_be32(buf + QCOW_HDR_CRYPT);
	h->l1_size = uq_be32(buf + QCOW_HDR_L1_SIZE);
	h->l1_table_offset = uq_be64(buf + QCOW_HDR_L1_TABLE_OFFSET);
	h->refcount_table_offset = uq_be64(buf + QCOW_HDR_REFCOUNT_TABLE);
	h->refcount_table_clusters = uq_be32(buf + QCOW_HDR_REFCOUNT_CLUSTERS);
	h->nb_snapshots = uq_be32(buf + QCOW_HDR_NB_SNAPSHOTS);
	h->snapshots_offset = uq_be64(buf + QCOW_HDR_SNAPSHOTS_OFFSET);

	if (h->version != 2 && h->version != 3)
		return uq_seterr(-EINVAL, "version %u is not 2 or 3",
				 h->version);
	if (h->cluster_bits < QCOW_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QCOW_MAX_CLUSTER_BITS)
		return uq_seterr(-EINVAL, "cluster_bits %u is outside %d..%d",
				 h->cluster_bits, QCOW_MIN_CLUSTER_BITS,
				 QCOW_MAX_CLUSTER_BITS);
	csize = 1ull << h->cluster_bits;

	if (h->version == 2) {
		h->refcount_order = 4;
		h->header_length = QCOW_V2_HEADER_LEN;
	} else {
		ret = decode_v3_fields(buf, len, csize, h);
		if (ret < 0)
			return ret;
	}
	if (h->crypt_method > 2)
		return uq_seterr(-EINVAL, "crypt_method %u is not 0, 1 or 2",
				 h->crypt_method);

	ret = check_l1(h, csize, file_size);
	if (ret < 0)
		return ret;
	ret = check_reftable(h, csize, file_size);
	if (ret < 0)
		return ret;
	return check_snapshots_backing(h, len, csize, file_size);
}

bool uq_header_equal(const struct uq_header *a, const struct uq_header *b)
{
	return a->magic == b->magic && a->version == b->version &&
	       a->backing_file_offset == b->backing_file_offset &&
	       a->backing_file_size == b->backing_file_size &&
	       a->cluster_bits == b->cluster_bits && a->size == b->size &&
	       a->crypt_method == b->crypt_method &&
	       a->l1_size == b->l1_size &&
	       a->l1_table_offset == b->l1_table_offset &&
	       a->refcount_table_offset == b->refcount_table_offset &&
	       a->refcount_table_clusters == b->refcount_table_clusters &&
	       a->nb_snapshots == b->nb_snapshots &&
	       a->snapshots_offset == b->snapshots_offset &&
	       a->incompatible_features == b->incompatible_features &&
	       a->compatible_features == b->compatible_features &&
	       a->autoclear_features == b->autoclear_features &&
	       a->refcount_order == b->refcount_order &&
	       a->header_length == b->header_length &&
	       a->compression_type == b->compression_type;
}

int uq_header_encode(const struct uq_header *h, uint8_t *buf, size_t len)
{
	uint32_t hlen;

	if (h->version == 2) {
		hlen = QCOW_V2_HEADER_LEN;
		if (h->incompatible_features || h->compatible_features ||
		    h->autoclear_features || h->refcount_order != 4 ||
		    h->compression_type)
			return uq_seterr(-EINVAL, "v2 header cannot carry "
					 "feature bits, refcount_order %u or "
					 "compression_type %u",
					 h->refcount_order,
					 h->compression_type);
	} else if (h->version == 3) {
		hlen = h->header_length;
		if (hlen < QCOW_V3_HEADER_LEN || hlen % 8)
			return uq_seterr(-EINVAL, "header_length %u is not a "
					 "multiple of 8 >= %u", hlen,
					 QCOW_V3_HEADER_LEN);
		if (hlen == QCOW_V3_HEADER_LEN && h->compression_type)
			return uq_seterr(-EINVAL, "compression_type %u needs "
					 "header_length >= %u",
					 h->compression_type,
					 QCOW_V3_HEADER_LEN_CT);
	} else {
		return uq_seterr(-EINVAL, "version %u is not 2 or 3",
				 h->version);
	}
	if (len < hlen)
		return uq_seterr(-EINVAL, "header needs %u bytes, buffer has "
				 "%zu", hlen, len);

	memset(buf, 0, hlen);   /* v3 padding must read as absent fields */
	uq_put_be32(buf + QCOW_HDR_MAGIC, QCOW_MAGIC);
	uq_put_be32(buf + QCOW_HDR_VERSION, h->version);
	uq_put_be64(buf + QCOW_HDR_BACKING_OFFSET, h->backing_file_offset);
	uq_put_be32(buf + QCOW_HDR_BACKING_SIZE, h->backing_file_size);
	uq_put_be32(buf + QCOW_HDR_CLUSTER_BITS, h->cluster_bits);
	uq_put_be64(buf + QCOW_HDR_SIZE, h->size);
	uq_put_be32(buf + QCOW_HDR_CRYPT, h->crypt_method);
	uq_put_be32(buf + QCOW_HDR_L1_SIZE, h->l1_size);
	uq_put_be64(buf + QCOW_HDR_L1_TABLE_OFFSET, h->l1_table_offset);
	uq_put_be64(buf + QCOW_HDR_REFCOUNT_TABLE, h->refcount_table_offset);
	uq_put_be32(buf + QCOW_HDR_REFCOUNT_CLUSTERS, h->refcount_table_clusters);
	uq_put_be32(buf + QCOW_HDR_NB_SNAPSHOTS, h->nb_snapshots);
	uq_put_be64(buf + QCOW_HDR_SNAPSHOTS_OFFSET, h->snapshots_offset);
	if (h->version == 2)
		return 0;
	uq_put_be64(buf + QCOW_HDR_INCOMPAT, h->incompatible_features);
	uq_put_be64(buf + QCOW_HDR_COMPAT, h->compatible_features);
	uq_put_be64(buf + QCOW_HDR_AUTOCLEAR, h->autoclear_features);
	uq_put_be32(buf + QCOW_HDR_REFCOUNT_ORDER, h->refcount_order);
	uq_put_be32(buf + QCOW_HDR_HEADER_LENGTH, hlen);
	if (hlen > QCOW_V3_HEADER_LEN)
		buf[QCOW_HDR_COMPRESSION] = h->compression_type;
	return 0;
}

/* ---- header extensions ---- */

/* Known extension types, each allowed at most once. */
static const struct {
	uint32_t type;
	const char *name;
} known_exts[] = {
	{ QCOW_EXT_BACKING_FMT, "backing format" },
	{ QCOW_EXT_FEATURES, "feature name table" },
	{ QCOW_EXT_BITMAPS, "bitmaps" },
	{ QCOW_EXT_CRYPTO, "crypto header" },
	{ QCOW_EXT_DATA_FILE, "data file name" },
};

static int known_index(uint32_t type)
{
	unsigned i;

	for (i = 0; i < sizeof(known_exts) / sizeof(known_exts[0]); i++)
		if (known_exts[i].type == type)
			return (int)i;
	return -1;
}

/* Copy a length-counted string into a NUL-terminated buffer; an embedded
 * NUL would silently change the name, so it is refused. */
static int copy_string(const char *field, const uint8_t *p, uint32_t n,
		       char *out, size_t outlen)
{
	if (n >= outlen)
		return uq_seterr(-EINVAL, "%s length %u exceeds %zu", field, n,
				 outlen - 1);
	if (memchr(p, 0, n))
		return uq_seterr(-EINVAL, "%s contains a NUL byte", field);
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

static int decode_features(const uint8_t *p, uint32_t n, struct uq_exts *e)
{
	uint32_t i, k;

	if (n % FEATURE_ENTRY)
		return uq_seterr(-EINVAL, "feature name table length %u is not "
				 "a multiple of %u", n, FEATURE_ENTRY);
	for (i = 0; i < n; i += FEATURE_ENTRY) {
		const uint8_t *f = p + i;
		char *name;

		if (f[0] > 2)
			return uq_seterr(-EINVAL, "feature name table entry %u: "
					 "type %u is not 0, 1 or 2",
					 i / FEATURE_ENTRY, f[0]);
		if (f[1] > 63)
			return uq_seterr(-EINVAL, "feature name table entry %u: "
					 "bit %u exceeds 63", i / FEATURE_ENTRY,
					 f[1]);
		name = e->feature_names[f[0]][f[1]];
		/* Names end up in messages: keep them printable. */
		for (k = 0; k < FEATURE_NAME_MAX && f[2 + k]; k++)
			name[k] = (f[2 + k] >= 0x20 && f[2 + k] < 0x7f) ?
				  (char)f[2 + k] : '?';
		name[k] = '\0';
	}
	return 0;
}

static int decode_bitmaps(const uint8_t *p, uint32_t n, uint64_t csize,
			  struct uq_exts *e)
{
	if (n != BITMAPS_EXT_LEN)
		return uq_seterr(-EINVAL, "bitmaps extension length %u is not "
				 "%u", n, BITMAPS_EXT_LEN);
	e->nb_bitmaps = uq_be32(p);
	e->bitmap_directory_size = uq_be64(p + 8);
	e->bitmap_directory_offset = uq_be64(p + 16);
	if (e->nb_bitmaps == 0 || e->nb_bitmaps > MAX_BITMAPS)
		return uq_seterr(-EINVAL, "nb_bitmaps %u is outside 1..%u",
				 e->nb_bitmaps, MAX_BITMAPS);
	if (uq_be32(p + 4))
		return uq_seterr(-EINVAL, "bitmaps extension reserved field is "
				 "0x%08x, not zero", uq_be32(p + 4));
	if (e->bitmap_directory_size > MAX_BITMAP_DIR)
		return uq_seterr(-EFBIG, "bitmap_directory_size %" PRIu64
				 " exceeds %llu", e->bitmap_directory_size,
				 MAX_BITMAP_DIR);
	if (e->bitmap_directory_offset == 0 ||
	    !cluster_aligned(e->bitmap_directory_offset, csize))
		return uq_seterr(-EINVAL, "bitmap_directory_offset 0x%" PRIx64
				 " is zero or not cluster aligned",
				 e->bitmap_directory_offset);
	e->has_bitmaps = true;
	return 0;
}

static int decode_ext(uint32_t type, const uint8_t *p, uint32_t n,
		      uint64_t csize, struct uq_exts *e)
{
	int ret;

	switch (type) {
	case QCOW_EXT_BACKING_FMT:
		ret = copy_string("backing format name", p, n, e->backing_fmt,
				  sizeof(e->backing_fmt));
		e->has_backing_fmt = ret == 0;
		return ret;
	case QCOW_EXT_DATA_FILE:
		ret = copy_string("data file name", p, n, e->data_file,
				  sizeof(e->data_file));
		e->has_data_file = ret == 0;
		return ret;
	case QCOW_EXT_FEATURES:
		return decode_features(p, n, e);
	case QCOW_EXT_BITMAPS:
		return decode_bitmaps(p, n, csize, e);
	case QCOW_EXT_CRYPTO:
		if (n != CRYPTO_EXT_LEN)
			return uq_seterr(-EINVAL, "crypto header extension "
					 "length %u is not %u", n,
					 CRYPTO_EXT_LEN);
		e->crypto_offset = uq_be64(p);
		e->crypto_length = uq_be64(p + 8);
		if (!cluster_aligned(e->crypto_offset, csize))
			return uq_seterr(-EINVAL, "crypto header offset 0x%"
					 PRIx64 " is not cluster aligned",
					 e->crypto_offset);
		e->has_crypto = true;
		return 0;
	default:
		e->unknown_count++;
		return 0;
	}
}

int uq_exts_decode(const uint8_t *buf, size_t len, const struct uq_header *h,
		   struct uq_exts *e)
{
	uint64_t csize, limit, off, data;
	const char *bound = "header cluster";
	unsigned seen = 0;
	int ret;

	memset(e, 0, sizeof(*e));
	if (h->cluster_bits < QCOW_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QCOW_MAX_CLUSTER_BITS)
		return uq_seterr(-EINVAL, "cluster_bits %u is outside %d..%d",
				 h->cluster_bits, QCOW_MIN_CLUSTER_BITS,
				 QCOW_MAX_CLUSTER_BITS);
	csize = 1ull << h->cluster_bits;
	limit = len < csize ? len : csize;
	/* The backing file name follows the extension area. */
	if (h->backing_file_offset && h->backing_file_offset < limit) {
		limit = h->backing_file_offset;
		bound = "backing file name";
	}
	off = h->version == 2 ? QCOW_V2_HEADER_LEN : h->header_length;
	if (off > limit)
		return uq_seterr(-EINVAL, "header_length %" PRIu64 " lies past "
				 "the extension area end %" PRIu64, off, limit);

	/* Each step advances by at least 8 bytes, so this ends within
	 * limit / 8 iterations. Reaching limit without an end marker is
	 * tolerated (old v2 images put the backing name right after). */
	while (off < limit) {
		uint32_t type, n;
		int idx;

		if (limit - off < 8)
			return uq_seterr(-EINVAL, "header extension at 0x%" PRIx64
					 " has no room for its type and length "
					 "before the %s", off, bound);
		type = uq_be32(buf + off);
		n = uq_be32(buf + off + 4);
		data = off + 8;
		if (type == QCOW_EXT_BITMAPS)
			e->bitmaps_at = (uint32_t)data;
		if (type == QCOW_EXT_END) {
			e->end = data;
			return 0;
		}
		if (n > limit - data)
			return uq_seterr(-EINVAL, "header extension 0x%08x length "
					 "%u runs past the %s", type, n, bound);
		idx = known_index(type);
		if (idx >= 0) {
			if (seen & (1u << idx))
				return uq_seterr(-EINVAL, "header extension "
						 "0x%08x (%s) appears twice",
						 type, known_exts[idx].name);
			seen |= 1u << idx;
		}
		ret = decode_ext(type, buf + data, n, csize, e);
		if (ret < 0)
			return ret;
		off = round_up8(data + n);
	}
	e->end = limit;
	return 0;
}

void uq_feature_name(const struct uq_exts *e, int type, unsigned bit,
		     char *out, size_t outlen)
{
	if (outlen == 0)
		return;
	if (e && type >= 0 && type <= 2 && bit < 64 &&
	    e->feature_names[type][bit][0])
		snprintf(out, outlen, "%s", e->feature_names[type][bit]);
	else
		snprintf(out, outlen, "bit %u", bit);
}
