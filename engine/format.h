/* SPDX-License-Identifier: MIT */
/* Pure qcow2 codecs: header, extensions, L1/L2/refcount entries, snapshot
 * table. No I/O, no allocation. Decoders validate every field and return
 * -errno with a message (uq_seterr) naming the field and the reason. */
#ifndef UQ_FORMAT_H
#define UQ_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QCOW_MAGIC 0x514649fbu            /* "QFI\xfb" */
#define QCOW_V2_HEADER_LEN 72u
#define QCOW_V3_HEADER_LEN 104u           /* through header_length */
#define QCOW_V3_HEADER_LEN_CT 112u        /* with compression_type, padded */

/* Byte offsets of the header fields, from the start of the file. */
enum {
	QCOW_HDR_MAGIC = 0,
	QCOW_HDR_VERSION = 4,
	QCOW_HDR_BACKING_OFFSET = 8,
	QCOW_HDR_BACKING_SIZE = 16,
	QCOW_HDR_CLUSTER_BITS = 20,
	QCOW_HDR_SIZE = 24,               /* size..l1_table_offset: one sector */
	QCOW_HDR_CRYPT = 32,
	QCOW_HDR_L1_SIZE = 36,
	QCOW_HDR_L1_TABLE_OFFSET = 40,
	QCOW_HDR_REFCOUNT_TABLE = 48,     /* refcount_table_offset */
	QCOW_HDR_REFCOUNT_CLUSTERS = 56,
	QCOW_HDR_NB_SNAPSHOTS = 60,       /* nb_snapshots; snapshots_offset follows */
	QCOW_HDR_SNAPSHOTS_OFFSET = 64,
	QCOW_HDR_INCOMPAT = 72,           /* v3 fields from here */
	QCOW_HDR_COMPAT = 80,
	QCOW_HDR_AUTOCLEAR = 88,
	QCOW_HDR_REFCOUNT_ORDER = 96,
	QCOW_HDR_HEADER_LENGTH = 100,
	QCOW_HDR_COMPRESSION = 104,
};

#define QCOW_MIN_CLUSTER_BITS 9
#define QCOW_MAX_CLUSTER_BITS 21          /* 2 MiB: QEMU's implementation limit */
#define QCOW_MAX_L1_BYTES (32u << 20)     /* 32 MiB L1 maps 2 EB at 2 MiB clusters */
#define QCOW_MAX_REFTABLE_BYTES (8u << 20) /* 8 MiB: 2 PB at 64 KiB / 16-bit */
#define QCOW_MAX_SNAPSHOTS 65536u
#define QCOW_MAX_SNAPSHOT_TABLE (64u << 20)
#define QCOW_MAX_SNAPSHOT_EXTRA 1024u
#define QCOW_MAX_BACKING_NAME 1023u
#define QCOW_MAX_HOST_OFFSET (1ull << 56) /* L1/L2 offsets are 56-bit */
#define QCOW_MAX_CHAIN_DEPTH 64           /* backing images opened at most */

/* incompatible_features */
#define QCOW_INCOMPAT_DIRTY      (1ull << 0)
#define QCOW_INCOMPAT_CORRUPT    (1ull << 1)
#define QCOW_INCOMPAT_DATA_FILE  (1ull << 2)
#define QCOW_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW_INCOMPAT_EXTL2      (1ull << 4)
#define QCOW_INCOMPAT_KNOWN      0x1full
/* compatible_features */
#define QCOW_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* autoclear_features */
#define QCOW_AUTOCLEAR_BITMAPS       (1ull << 0)
#define QCOW_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)
#define QCOW_AUTOCLEAR_KNOWN         0x3ull

#define QCOW_COMPRESS_ZLIB 0
#define QCOW_COMPRESS_ZSTD 1

/* header extension types */
#define QCOW_EXT_END          0x00000000u
#define QCOW_EXT_BACKING_FMT  0xe2792acau
#define QCOW_EXT_FEATURES     0x6803f857u
#define QCOW_EXT_BITMAPS      0x23852875u
#define QCOW_EXT_CRYPTO       0x0537be77u
#define QCOW_EXT_DATA_FILE    0x44415441u

/* L1/L2 entry bits */
#define QCOW_OFLAG_COPIED     (1ull << 63)
#define QCOW_OFLAG_COMPRESSED (1ull << 62)
#define QCOW_OFLAG_ZERO       (1ull << 0)
#define QCOW_L1E_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW_L2E_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW_L1E_RESERVED     0x7f000000000001ffull
#define QCOW_L2E_STD_RESERVED 0x3f000000000001feull  /* bits 1-8, 56-61 */
#define QCOW_REFT_OFFSET_MASK 0xfffffffffffffe00ull
#define QCOW_REFT_RESERVED    0x00000000000001ffull

/* Decoded header (host byte order). Fields absent in v2 hold their
 * implied values (refcount_order 4, header_length 72). */
struct uq_header {
	uint32_t magic;
	uint32_t version;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;
};

/* Decode and validate the header in buf (the start of the file, len bytes,
 * at least min(file_size, one cluster) when available). file_size bounds
 * every table: a table whose end lies past it is refused. Checks magic,
 * version 2/3, cluster_bits 9..21, header_length (>= 104, multiple of 8,
 * <= cluster), refcount_order <= 6 (v2: must be implied 4), crypt_method,
 * table offsets cluster-aligned and nonzero where required, L1 size vs
 * virtual size and 32 MiB cap, refcount table 8 MiB cap, snapshot count
 * cap, backing name length <= 1023 and inside the first cluster,
 * compression_type vs its incompatible bit, extended L2 needs
 * cluster_bits >= 14, all products overflow-checked.
 * Unknown incompatible bits are NOT refused here (the caller names them
 * from the feature table). Returns 0 or -EINVAL/-EFBIG with uq_seterr. */
int uq_header_decode(const uint8_t *buf, size_t len, uint64_t file_size,
		     struct uq_header *h);

/* Encode h into buf (len >= h->header_length). v2 writes 72 bytes. */
int uq_header_encode(const struct uq_header *h, uint8_t *buf, size_t len);
/* Do two headers agree in every field the codec reads and writes? */
bool uq_header_equal(const struct uq_header *a, const struct uq_header *b);

/* Minimum L1 entries for a virtual size (overflow-checked). */
/* Is [off, off + bytes) cluster aligned and inside the file? A message
 * names field (for the offset) or what (for the range) if not. */
int uq_check_table(const char *field, const char *what, uint64_t off, uint64_t bytes,
		   uint64_t csize, uint64_t file_size);

int uq_l1_entries_for(uint64_t size, uint32_t cluster_bits, bool extended_l2,
		      uint64_t *entries);

/* Header extensions, parsed from the first cluster. */
struct uq_exts {
	bool has_backing_fmt;
	char backing_fmt[32];          /* NUL-terminated; longer names refused */
	bool has_data_file;
	char data_file[1024];          /* NUL-terminated, <= 1023 bytes */
	bool has_bitmaps;
	uint32_t bitmaps_at;           /* offset of the extension's data */
	uint32_t nb_bitmaps;
	uint64_t bitmap_directory_size;
	uint64_t bitmap_directory_offset;
	bool has_crypto;
	uint64_t crypto_offset;
	uint64_t crypto_length;
	/* feature name table: names of incompatible (0), compatible (1) and
	 * autoclear (2) bits, "" where not given */
	char feature_names[3][64][48];
	uint32_t unknown_count;        /* unknown extensions seen (tolerated) */
	uint64_t end;                  /* offset just past the end marker */
};

/* Walk the extension area from h->header_length to the end marker inside
 * buf (the first cluster, len bytes). Each extension must fit before the
 * cluster end and must not overlap the backing file name; known
 * extensions appear at most once and have valid lengths. v2 images may
 * carry extensions too (after the 72-byte header). */
int uq_exts_decode(const uint8_t *buf, size_t len, const struct uq_header *h,
		   struct uq_exts *e);

/* Name of a feature bit for messages: the table's name or "bit N".
 * type: 0 incompatible, 1 compatible, 2 autoclear. out is >= 64 bytes. */
void uq_feature_name(const struct uq_exts *e, int type, unsigned bit,
		     char *out, size_t outlen);

/* Geometry derived from a validated header. */
struct uq_geom {
	uint32_t cluster_bits;
	uint64_t cluster_size;
	bool extended_l2;
	uint32_t l2_entry_bytes;       /* 8, or 16 with extended L2 */
	uint32_t l2_bits;              /* log2(entries per L2 table) */
	uint64_t l2_entries;
	uint32_t subcluster_bits;      /* cluster_bits - 5 with ext L2, else cluster_bits */
	uint32_t refcount_order;
	uint32_t rb_bits;              /* log2(entries per refcount block) */
	uint32_t csize_shift;          /* compressed descriptor: 62 - (cluster_bits - 8) */
	uint64_t csize_mask;
	uint64_t coffset_mask;
	bool external_data;
	bool v3;
};

void uq_geom_init(const struct uq_header *h, struct uq_geom *g);

/* L1 entry -> L2 table offset (0 = unallocated). Rejects reserved bits,
 * misalignment, offsets >= 2^56. copied reports bit 63. */
int uq_l1_decode(const struct uq_geom *g, uint64_t entry, uint64_t *l2_off,
		 bool *copied);

enum uq_ctype {
	UQ_C_UNALLOC,     /* read through to backing / zeros */
	UQ_C_ZERO,        /* reads zeros; host_off may hold a preallocation */
	UQ_C_NORMAL,      /* data at host_off */
	UQ_C_COMPRESSED,  /* comp_off / comp_len bytes, inflate to a cluster */
	UQ_C_SUBCLUSTERS, /* extended L2 standard cluster: see masks */
};

struct uq_l2map {
	enum uq_ctype type;
	uint64_t host_off;    /* cluster-aligned, 0 if none */
	bool copied;
	uint64_t comp_off;    /* compressed: byte offset in the file */
	uint64_t comp_len;    /* compressed: bytes to read (sector-rounded) */
	uint32_t alloc_mask;  /* subclusters: bit i = subcluster i allocated */
	uint32_t zero_mask;   /* subclusters: bit i = subcluster i reads zeros */
};

/* Decode an L2 entry (and, with extended L2, its bitmap word). Rejects
 * reserved bits, misaligned or >= 2^56 host offsets, the zero flag on v2
 * or extended images, subclusters both allocated and zero, allocated
 * subclusters without a host offset. With an external data file a
 * normal cluster's offset may be 0 if COPIED is set. */
int uq_l2_decode(const struct uq_geom *g, uint64_t entry, uint64_t bitmap,
		 struct uq_l2map *m);

/* Encoders for the write path. */
uint64_t uq_l2_encode_normal(uint64_t host_off, bool copied);
uint64_t uq_l2_encode_compressed(const struct uq_geom *g, uint64_t off,
				 uint64_t len);

/* Refcount block entry i of a block with 1 << refcount_order bit entries.
 * Sub-byte widths: bit 0 of each byte is the least significant; widths of
 * 8 bits and more are big-endian. */
uint64_t uq_refcount_get(const uint8_t *block, uint32_t refcount_order,
			 uint64_t i);
void uq_refcount_set(uint8_t *block, uint32_t refcount_order, uint64_t i,
		     uint64_t value);
static inline uint64_t uq_refcount_max(uint32_t refcount_order)
{
	return refcount_order >= 6 ? UINT64_MAX
				   : (1ull << (1u << refcount_order)) - 1;
}

/* Refcount table entry -> block offset (0 = none); rejects reserved bits
 * and misalignment. */
int uq_reftable_decode(const struct uq_geom *g, uint64_t entry,
		       uint64_t *block_off);

/* One snapshot table entry, decoded in place: id and name point into the
 * caller's buffer (not NUL-terminated). */
struct uq_snapshot_raw {
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint16_t id_len;
	uint16_t name_len;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;     /* 64-bit extra field if present, else 32-bit */
	uint32_t extra_size;
	bool has_disk_size;
	uint64_t disk_size;
	bool has_icount;
	uint64_t icount;
	const uint8_t *id;
	const uint8_t *name;
	size_t entry_len;           /* bytes consumed, padded to 8 */
};

/* Decode the entry at buf (len bytes left in the table). Checks the entry
 * fits, extra_size <= 1 KiB, v3 has extra data through disk size, L1
 * offset aligned and table inside file_size, l1_size <= 32 MiB / 8. */
int uq_snapshot_decode(const struct uq_geom *g, const uint8_t *buf, size_t len,
		       uint64_t file_size, struct uq_snapshot_raw *s);

/* Big-endian helpers. */
static inline uint16_t uq_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t uq_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t uq_be64(const uint8_t *p)
{
	return ((uint64_t)uq_be32(p) << 32) | uq_be32(p + 4);
}
static inline void uq_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void uq_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void uq_put_be64(uint8_t *p, uint64_t v)
{
	uq_put_be32(p, (uint32_t)(v >> 32));
	uq_put_be32(p + 4, (uint32_t)v);
}

/* Encode one snapshot table entry at buf (len bytes available): the fixed
 * part, extra data (64-bit VM state size and disk size; icount too when
 * has_icount, as qemu 5.0+ writes it: 16 or 24 bytes, s->extra_size is
 * ignored), id, name and zero padding to a multiple of 8. With buf NULL
 * only the length is computed. Returns the entry length, -ENOSPC if it
 * doesn't fit in len, -EINVAL for an L1 table over 32 MiB. */
long uq_snapshot_encode(const struct uq_snapshot_raw *s, uint8_t *buf, size_t len);

/* ---- bitmaps (bmformat.c) ---- */

#define QCOW_BM_MAX 65535u                 /* bitmaps per image (QEMU's limit) */
#define QCOW_BM_DIR_MAX (QCOW_BM_MAX * 1024ull) /* ~64 MiB: 1 KiB per entry */
#define QCOW_BM_NAME_MAX 1023u
#define QCOW_BM_MIN_GRAN_BITS 9u
#define QCOW_BM_MAX_GRAN_BITS 31u
#define QCOW_BM_MAX_TABLE 0x8000000u       /* entries in one bitmap table */
/* Bitmap data of one bitmap: 512 MiB covers 2 PiB at 512-byte
 * granularity, 256 EiB at 64 KiB; QEMU refuses more too. */
#define QCOW_BM_MAX_DATA (512ull << 20)
#define QCOW_BM_DIR_FIXED 24u

#define QCOW_BMF_IN_USE  (1u << 0)
#define QCOW_BMF_AUTO    (1u << 1)
#define QCOW_BMF_KNOWN   0x3u              /* extra_data_compatible is refused, as QEMU does */
#define QCOW_BM_TYPE_DIRTY 1u

#define QCOW_BME_RESERVED    0xff000000000001feull  /* bits 1-8, 56-63 */
#define QCOW_BME_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW_BME_ALL_ONES    1ull

/* One bitmap directory entry, decoded in place: name points into the
 * caller's buffer (not NUL-terminated). */
struct uq_bmentry {
	uint64_t table_off;
	uint32_t table_size;        /* entries */
	uint32_t flags;
	uint8_t type;
	uint8_t gran_bits;
	uint16_t name_len;
	uint32_t extra_len;
	const uint8_t *name;
	size_t entry_len;           /* bytes consumed, padded to 8 */
};

/* Bytes of bitmap data for a virtual size: one bit per granule. */
uint64_t uq_bm_data_bytes(uint64_t vsize, uint32_t gran_bits);
/* Bitmap table entries that data needs: one per cluster of data. */
uint64_t uq_bm_table_entries(uint64_t vsize, uint32_t gran_bits, uint64_t csize);

/* Decode and validate the entry at buf (len bytes left in the directory):
 * the entry fits, no extra data, table offset nonzero and aligned, table
 * size 1..2^27 and inside file_size, granularity bits 9..31, no unknown
 * flags, name 1..1023 bytes without NUL, type 1, at most 512 MiB of data
 * and, unless in use, a table exactly as long as vsize needs. */
int uq_bmentry_decode(const uint8_t *buf, size_t len, uint64_t csize, uint64_t vsize,
		      uint64_t file_size, struct uq_bmentry *e);

/* Bytes an entry with this name takes (padded to 8). */
size_t uq_bmentry_len(size_t name_len);
/* Encode e (its name and fields) at buf, which has uq_bmentry_len bytes. */
void uq_bmentry_encode(const struct uq_bmentry *e, uint8_t *buf);

/* A bitmap table entry: reserved bits zero, all-ones flag only without an
 * offset, the offset aligned. *data_off gets the data cluster (0: none). */
int uq_bmtable_entry_decode(uint64_t entry, uint64_t csize, uint64_t *data_off);

#endif
