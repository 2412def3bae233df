/* SPDX-License-Identifier: MIT */
/* uqcow public API: open, inspect, read and write qcow2 (and raw) images.
 * Every fallible call returns 0 (or a byte count) or a negative errno. */
#ifndef UQCOW_H
#define UQCOW_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct uq_image uq_image;

enum uq_backend {
	UQ_IO_AUTO = 0, /* io_uring, falling back to psync if it can't be set up */
	UQ_IO_URING,
	UQ_IO_PSYNC,
	UQ_IO_MEM,      /* in-memory file, contents given in uq_open_opts */
};

enum uq_format {
	UQ_FMT_PROBE = 0, /* qcow2 if the magic matches, raw otherwise */
	UQ_FMT_QCOW2,
	UQ_FMT_RAW,
};

#define UQ_OPEN_RDWR       (1u << 0)
#define UQ_OPEN_DIRECT     (1u << 1) /* O_DIRECT (qemu-img cache=none) */
#define UQ_OPEN_NO_BACKING (1u << 2) /* don't open the backing chain */
/* With UQ_OPEN_RDWR: open for uq_check's repairs only. A corrupt image is
 * accepted, the write state is set up by uq_check once it has looked at
 * the image, and guest writes through this handle are refused. */
#define UQ_OPEN_REPAIR     (1u << 3)
/* Read-only, sharing every permission with other users of the image, as
 * qemu-img -U (--force-share): only QEMU's "consistent read" lock byte is
 * held, so the open works while another process writes the image, and
 * may see it change underneath. With UQ_OPEN_RDWR: -EINVAL. */
#define UQ_OPEN_FORCE_SHARE (1u << 4)
/* QEMU's discard-no-unref (qcow2 v3 only): a discard, or a write-zeroes
 * that may unmap, keeps the host clusters this image owns allocated and
 * marks them zero, so they are reused in place instead of freed and
 * allocated again elsewhere (no fragmentation, no file growing past the
 * virtual size). A discard still gives the kept cluster's space back to
 * the file system (a punch) unless UQ_OPEN_KEEP_DISCARDED is set, as
 * QEMU's pass-discard-request=off. On a v2 image uq_open fails -EINVAL. */
#define UQ_OPEN_DISCARD_NO_UNREF (1u << 5)
#define UQ_OPEN_KEEP_DISCARDED   (1u << 6)

struct uq_open_opts {
	size_t struct_size;       /* sizeof(struct uq_open_opts): lets the ABI grow */
	unsigned flags;           /* UQ_OPEN_* */
	enum uq_backend backend;
	enum uq_format format;
	uint64_t l2_cache_size;   /* bytes; 0 = cover the image up to 32 MiB */
	unsigned queue_depth;     /* io_uring entries; 0 = 128 */
	const void *mem_data;     /* UQ_IO_MEM: initial file contents (copied) */
	size_t mem_len;
	/* bytes of refcount blocks kept in memory (QEMU's refcount-cache-size);
	 * 0 = 4 MiB. At least 2 blocks. */
	uint64_t refcount_cache_size;
};

/* Image locking. uq_open locks every file it opens (the image, its data
 * file and backing files) as QEMU does: OFD byte-range locks on bytes
 * 100 + permission bit and 200 + bit (block/file-posix.c), held until
 * uq_close. A writable open holds "consistent read", "write" and
 * "resize" and shares only "consistent read" and "write unchanged"; a
 * read-only open (and every backing file) holds "consistent read" and
 * shares all but "write" and "resize"; UQ_OPEN_FORCE_SHARE holds
 * "consistent read" and shares everything. If another process (or another
 * open in this one) holds the image in a conflicting way, uq_open fails
 * with -EAGAIN and uq_errmsg() names the file and the permission. Where
 * the file system has no OFD locks the open goes on unlocked: see
 * uq_info.lock_error. */

/* Message describing the last failure of a uq_ call on this thread,
 * "" if none. Every call clears it first, so it never describes an older
 * call. Structs passed in or filled in carry struct_size, set by the
 * caller to sizeof the struct it was built with. The message names the
 * file, the field and the reason where it can. */
const char *uq_errmsg(void);

int uq_open(const char *path, const struct uq_open_opts *opts, uq_image **out);
int uq_close(uq_image *img);

/* ---- inspection ---- */

struct uq_info {
	size_t struct_size;        /* sizeof(the struct): set it before the call */
	enum uq_format format;
	uint32_t version;          /* 2 or 3; 0 for raw */
	uint64_t virtual_size;
	uint32_t cluster_size;     /* 0 for raw */
	uint32_t refcount_bits;
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	int compression_type;      /* 0 zlib, 1 zstd */
	int extended_l2;
	int lazy_refcounts;
	int corrupt;
	int dirty;
	int data_file_raw;
	int has_bitmaps;
	uint32_t nb_snapshots;
	uint64_t actual_size;      /* bytes the file occupies on disk */
	uint64_t file_length;      /* end of file */
	char filename[4096];
	char backing_file[1024];   /* as stored in the image; "" if none */
	char backing_full[4096];   /* resolved against the image's directory */
	char backing_format[32];
	char data_file[1024];
	const char *backend;       /* "io_uring", "psync" or "mem" */
	/* 1 if the image's file (and its data file) holds its image locks;
	 * 0 for a memory file, or where the file system can't lock: then
	 * lock_error is the errno that said so (EINVAL: the kernel has no
	 * OFD locks), and nobody else's use of the image is detected. */
	int locked;
	int lock_error;
	uint32_t nb_bitmaps;       /* persistent bitmaps (uq_bitmap_get) */
	/* Why the bitmaps couldn't be read, "" if they could (read-only opens
	 * of an image with malformed bitmap metadata go on without them). */
	char bitmaps_problem[256];
};

int uq_get_info(uq_image *img, struct uq_info *out);

/* Next image of the backing chain, or NULL. Owned by img. */
uq_image *uq_backing(uq_image *img);

struct uq_snapshot_info {
	size_t struct_size;        /* sizeof(the struct): set it before the call */
	char id[128];
	char name[1024];
	uint64_t vm_state_size;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t disk_size;        /* virtual size when taken */
	uint64_t icount;           /* guest instruction count; UINT64_MAX if absent */
	uint32_t l1_size;
};

int uq_snapshot_get(uq_image *img, uint32_t idx, struct uq_snapshot_info *out);

/* Allocation status of [off, off+len), as qemu-img map reports it: the
 * longest run from off (at most len bytes) whose status is uniform. */
struct uq_extent {
	size_t struct_size;        /* sizeof(the struct): set it before the call */
	uint64_t start;
	uint64_t length;
	int depth;        /* image of the chain that supplies it: 0 = this one */
	int present;      /* some image of the chain allocates it */
	int zero;         /* reads as zeros */
	int data;         /* has data at offset (not zero, not unallocated) */
	int compressed;
	int has_offset;
	uint64_t offset;  /* host offset in the data file of image `depth` */
};

int uq_block_status(uq_image *img, uint64_t off, uint64_t len,
		    struct uq_extent *ext);

/* ---- I/O: asynchronous core ---- */

/* Completion: res is the byte count or a negative errno. */
typedef void (*uq_done_fn)(void *arg, ssize_t res);

/* Queue a guest read; cb runs from uq_poll on the calling thread. */
int uq_aio_read(uq_image *img, void *buf, size_t len, uint64_t off,
		uq_done_fn cb, void *arg);

/* Submit queued I/O and reap completions until at least min_complete
 * requests have finished (0: don't wait). Returns the number finished. */
int uq_poll(uq_image *img, unsigned min_complete);

/* Synchronous wrappers: submit and wait. */
ssize_t uq_pread(uq_image *img, void *buf, size_t len, uint64_t off);


/* ---- writing ---- */

enum uq_prealloc {
	UQ_PREALLOC_OFF = 0,
	UQ_PREALLOC_METADATA,   /* L2 tables and cluster mappings, sparse file */
	UQ_PREALLOC_FALLOC,     /* metadata + fallocate */
	UQ_PREALLOC_FULL,       /* metadata + zeros written */
};

struct uq_create_opts {
	size_t struct_size;        /* sizeof(struct uq_create_opts) */
	uint64_t size;             /* virtual size; 0 = the backing file's */
	uint32_t cluster_size;     /* 0 = 64 KiB */
	uint32_t refcount_bits;    /* 0 = 16 */
	uint32_t version;          /* 2 (compat=0.10) or 3 (1.1); 0 = 3 */
	int lazy_refcounts;
	int extended_l2;
	int compression_type;      /* 0 zlib, 1 zstd */
	enum uq_prealloc prealloc;
	const char *backing_file;  /* stored as given */
	const char *backing_format;/* "qcow2" or "raw"; NULL = probe now */
	const char *data_file;     /* external data file, created if missing */
	int data_file_raw;
	enum uq_backend backend;
};

/* Create (or truncate) path as an empty qcow2 image. */
int uq_create(const char *path, const struct uq_create_opts *opts);

#define UQ_WRITE_COMPRESSED (1u << 0) /* whole clusters only */
#define UQ_ZERO_UNMAP       (1u << 1) /* write-zeroes may free clusters */

/* Asynchronous writes: cb runs from uq_poll. Metadata reaches the disk in
 * the order docs/ARCHITECTURE.md gives, at the latest on flush or close.
 * uq_aio_flush returns at once; its steps go out as earlier ones complete
 * in uq_poll. Writes, zeroes, discards and flushes submitted while a flush
 * is in flight wait for it, and go out in order after it completes. */
int uq_aio_write(uq_image *img, const void *buf, size_t len, uint64_t off,
		 unsigned flags, uq_done_fn cb, void *arg);
int uq_aio_write_zeroes(uq_image *img, uint64_t off, uint64_t len,
			unsigned flags, uq_done_fn cb, void *arg);
int uq_aio_discard(uq_image *img, uint64_t off, uint64_t len,
		   uq_done_fn cb, void *arg);
int uq_aio_flush(uq_image *img, uq_done_fn cb, void *arg);

ssize_t uq_pwrite(uq_image *img, const void *buf, size_t len, uint64_t off,
		  unsigned flags);
int uq_write_zeroes(uq_image *img, uint64_t off, uint64_t len, unsigned flags);
int uq_discard(uq_image *img, uint64_t off, uint64_t len);
int uq_flush(uq_image *img);

/* Change the virtual size: grow, or shrink when the tail is unallocated. */
int uq_resize(uq_image *img, uint64_t size);

/* Rewrite the refcount structures with another width (1..64 bits), crash
 * safe: new structures first, the header switch last. */
int uq_amend_refcount_bits(uq_image *img, uint32_t bits);

/* What uq_amend changes; a zero field leaves that option as it is. */
enum uq_amend_switch {
	UQ_AMEND_KEEP = 0,
	UQ_AMEND_OFF = 1,
	UQ_AMEND_ON = 2,
};

struct uq_amend_opts {
	size_t struct_size;        /* sizeof(struct uq_amend_opts) */
	int version;               /* 2 (compat=0.10) or 3 (compat=1.1); 0 keep */
	uint32_t refcount_bits;    /* 1..64, a power of two; 0 keep */
	int lazy_refcounts;        /* enum uq_amend_switch (v3 only) */
	int data_file_raw;         /* enum uq_amend_switch: only off can change */
	/* called as the work proceeds: done of total steps; may be NULL */
	void (*progress)(void *arg, uint64_t done, uint64_t total);
	void *progress_arg;
};

/* qemu-img amend for qcow2: everything is checked before anything is
 * written (refusals worded as qemu-img's); then v2 -> v3, the refcount
 * width, data_file_raw, lazy refcounts, v3 -> v2, in QEMU's order. Each
 * change is crash safe: new structures durable first, header last.
 * Going to v2 expands zero clusters (in snapshots' tables too) and needs
 * 16-bit refcounts, no external data file, no extended L2 entries, and
 * no zstd-compressed clusters. */
int uq_amend(uq_image *img, const struct uq_amend_opts *opts);

/* ---- more queues: one per thread driving the same image ---- */

/* A queue (its own io_uring) for the calling thread. Reads may be issued
 * on any number of queues at once, from their own threads; writes, flushes
 * and structural changes go through the image's own calls (uq_aio_write,
 * uq_pwrite, ...) from one thread. Destroy every queue before uq_close. */
typedef struct uq_queue uq_queue;

int uq_queue_create(uq_image *img, unsigned depth, uq_queue **out);
void uq_queue_destroy(uq_queue *q);
int uq_queue_read(uq_queue *q, void *buf, size_t len, uint64_t off,
		  uq_done_fn cb, void *arg);
int uq_queue_poll(uq_queue *q, unsigned min_complete);

/* ---- internal snapshots ---- */

/* Snapshots are named by ID or name: an ID match wins, else the first
 * snapshot with that name (qemu-img's rule; names need not be unique). */

/* Take a snapshot of the active state (disk only, no VM state). Needs
 * refcount_bits >= 2; a width too narrow for one more reference to some
 * cluster refuses with -ERANGE and changes nothing. */
int uq_snapshot_create(uq_image *img, const char *name);

/* Revert the active state to a snapshot, its virtual size included;
 * what only the old state used is freed. */
int uq_snapshot_apply(uq_image *img, const char *name_or_id);

/* Remove a snapshot and free what only it used. */
int uq_snapshot_delete(uq_image *img, const char *name_or_id);

/* Make an image opened read-only read as a snapshot: its L1 table and
 * virtual size become the snapshot's (qemu-img convert -l). Call with no
 * I/O in flight, before any other thread uses the image. */
int uq_snapshot_view(uq_image *img, const char *name_or_id);

/* ---- persistent dirty bitmaps (qemu-img bitmap) ---- */

#define UQ_BITMAP_IN_USE (1u << 0) /* not saved cleanly: its bits can't be trusted */
#define UQ_BITMAP_AUTO   (1u << 1) /* enabled: every guest write sets its bits */

struct uq_bitmap_info {
	size_t struct_size;        /* sizeof(the struct): set it before the call */
	char name[1024];
	uint32_t granularity;      /* bytes of guest disk per bit */
	uint32_t flags;            /* UQ_BITMAP_*, as on disk */
};

/* Bitmap idx (0 .. uq_info.nb_bitmaps - 1), in directory order. */
int uq_bitmap_get(uq_image *img, uint32_t idx, struct uq_bitmap_info *out);

/* The calls below change the image (opened with UQ_OPEN_RDWR, v3 only)
 * and are on disk when they return. An enabled bitmap is tracked by the
 * handle (in use on disk) until uq_close writes it back. */

/* Add an empty bitmap; granularity 0: the cluster size, at least 4 KiB. */
int uq_bitmap_add(uq_image *img, const char *name, uint32_t granularity, int enabled);
int uq_bitmap_remove(uq_image *img, const char *name);
/* Clear every bit. */
int uq_bitmap_clear(uq_image *img, const char *name);
/* Enable (nonzero) or disable a bitmap. */
int uq_bitmap_enable(uq_image *img, const char *name, int enabled);
/* Set in name every bit set in src_name of src (NULL: img itself); both
 * images have the same virtual size, granularities may differ. */
int uq_bitmap_merge(uq_image *img, const char *name, uq_image *src, const char *src_name);
/* Whether [off, off + *run) is dirty in name: the longest run from off
 * (at most len bytes) of one state. Works on read-only images too. */
int uq_bitmap_status(uq_image *img, const char *name, uint64_t off, uint64_t len,
		     uint64_t *run, int *dirty);

/* ---- consistency check and repair (qemu-img check) ---- */

#define UQ_CHECK_REPAIR_LEAKS  (1u << 0) /* lower refcounts that are too high */
#define UQ_CHECK_REPAIR_ERRORS (1u << 1) /* raise low refcounts, fix COPIED */
#define UQ_CHECK_REPAIR_ALL    (UQ_CHECK_REPAIR_LEAKS | UQ_CHECK_REPAIR_ERRORS)

/* Counters as qemu-img check reports them. report, progress and arg are
 * set by the caller (each may be NULL); uq_check fills in the rest. */
struct uq_check_result {
	size_t struct_size;        /* sizeof(struct uq_check_result) */
	/* One problem line, worded as qemu-img words it ("Leaked cluster 5
	 * refcount=1 reference=0", "ERROR cluster 7 refcount=0 reference=1",
	 * "Repairing ..."), without a newline, as soon as it is found. */
	void (*report)(void *arg, const char *line);
	/* Work done so far out of total (units: tables read). */
	void (*progress)(void *arg, uint64_t done, uint64_t total);
	void *arg;

	uint64_t check_errors;     /* the check itself could not look somewhere */
	uint64_t corruptions;      /* left after repairs */
	uint64_t leaks;            /* left after repairs */
	uint64_t corruptions_fixed;
	uint64_t leaks_fixed;
	uint64_t image_end_offset; /* past the last cluster in use */
	uint64_t total_clusters;   /* guest clusters of the virtual size */
	uint64_t allocated_clusters;
	uint64_t fragmented_clusters;
	uint64_t compressed_clusters;
	int dirty;                 /* dirty bit as found */
	int corrupt;               /* corrupt bit as found */
	int rebuilt;               /* refcount structures were rebuilt */
	int marked_clean;          /* repairs cleared the dirty and corrupt bits */
	/* Bytes the check's own structures needed at most (3 per cluster of
	 * the file, the refcount table, the largest L1 table and read-ahead
	 * buffers); the image's caches come on top. A rebuild (repairs of
	 * broken refcount structures) takes 8 more bytes per cluster. */
	uint64_t memory_need;
};

/* Walk every L1/L2 table (active and snapshots), the refcount table and
 * blocks, the snapshot table and bitmaps; compare real references with
 * the stored refcounts; check COPIED flags, alignment, reserved bits and
 * overlapping metadata. flags: 0 to check only, or UQ_CHECK_REPAIR_*,
 * which needs an image opened with UQ_OPEN_RDWR (normally together with
 * UQ_OPEN_REPAIR). Returns 0 when the check ran to the end, whatever it
 * found (see res), or -errno when it could not (-ENOTSUP: not qcow2). */
int uq_check(uq_image *img, unsigned flags, struct uq_check_result *res);

/* ---- costs: I/O accounting and engine events ---- */

/*
 * Exact counters of what the engine did, always on. They cover the image
 * and the backing chain opened with it (one set per chain) and every
 * uq_queue made on it. Single-threaded workloads give the same counts on
 * every run. The names (uq_stat_name) are stable and documented in
 * README.md; new counters are only ever added at the end.
 *
 * req_*: what the caller asked for. file_*: what reached the files, from
 * the accounting layer under every file of the chain. data_* and the
 * per-kind metadata counters: the same reads and writes classified by the
 * engine, so file_read_ops == data_read_ops + meta_read_ops (writes
 * alike). The rest are engine events.
 */
enum uq_stat {
	UQ_STAT_REQ_READ_OPS, UQ_STAT_REQ_READ_BYTES,
	UQ_STAT_REQ_WRITE_OPS, UQ_STAT_REQ_WRITE_BYTES,
	UQ_STAT_REQ_ZERO_OPS, UQ_STAT_REQ_ZERO_BYTES,
	UQ_STAT_REQ_DISCARD_OPS, UQ_STAT_REQ_DISCARD_BYTES,
	UQ_STAT_REQ_FLUSH_OPS,

	UQ_STAT_FILE_READ_OPS, UQ_STAT_FILE_READ_BYTES,
	UQ_STAT_FILE_WRITE_OPS, UQ_STAT_FILE_WRITE_BYTES,
	UQ_STAT_FILE_SYNC_OPS,
	UQ_STAT_FILE_PUNCH_OPS, UQ_STAT_FILE_PUNCH_BYTES,
	UQ_STAT_FILE_FALLOC_OPS, UQ_STAT_FILE_FALLOC_BYTES,
	UQ_STAT_FILE_TRUNCATE_OPS,

	UQ_STAT_DATA_READ_OPS, UQ_STAT_DATA_READ_BYTES,
	UQ_STAT_DATA_WRITE_OPS, UQ_STAT_DATA_WRITE_BYTES,
	UQ_STAT_META_READ_OPS, UQ_STAT_META_READ_BYTES,    /* sums of the kinds below */
	UQ_STAT_META_WRITE_OPS, UQ_STAT_META_WRITE_BYTES,

	/* metadata by kind: read ops, read bytes, write ops, write bytes */
	UQ_STAT_HEADER_READ_OPS, UQ_STAT_HEADER_READ_BYTES,
	UQ_STAT_HEADER_WRITE_OPS, UQ_STAT_HEADER_WRITE_BYTES,
	UQ_STAT_L1_READ_OPS, UQ_STAT_L1_READ_BYTES,
	UQ_STAT_L1_WRITE_OPS, UQ_STAT_L1_WRITE_BYTES,
	UQ_STAT_L2_READ_OPS, UQ_STAT_L2_READ_BYTES,
	UQ_STAT_L2_WRITE_OPS, UQ_STAT_L2_WRITE_BYTES,
	UQ_STAT_REFTABLE_READ_OPS, UQ_STAT_REFTABLE_READ_BYTES,
	UQ_STAT_REFTABLE_WRITE_OPS, UQ_STAT_REFTABLE_WRITE_BYTES,
	UQ_STAT_REFBLOCK_READ_OPS, UQ_STAT_REFBLOCK_READ_BYTES,
	UQ_STAT_REFBLOCK_WRITE_OPS, UQ_STAT_REFBLOCK_WRITE_BYTES,
	UQ_STAT_SNAPTABLE_READ_OPS, UQ_STAT_SNAPTABLE_READ_BYTES,
	UQ_STAT_SNAPTABLE_WRITE_OPS, UQ_STAT_SNAPTABLE_WRITE_BYTES,
	UQ_STAT_BITMAP_READ_OPS, UQ_STAT_BITMAP_READ_BYTES,
	UQ_STAT_BITMAP_WRITE_OPS, UQ_STAT_BITMAP_WRITE_BYTES,
	UQ_STAT_OTHER_READ_OPS, UQ_STAT_OTHER_READ_BYTES,
	UQ_STAT_OTHER_WRITE_OPS, UQ_STAT_OTHER_WRITE_BYTES,

	UQ_STAT_L2_HITS, UQ_STAT_L2_MISSES, UQ_STAT_L2_EVICTIONS, UQ_STAT_L2_WRITEBACKS,
	UQ_STAT_REFBLOCK_LOADS, UQ_STAT_REFBLOCK_WRITEBACKS,
	UQ_STAT_CLUSTERS_ALLOCATED, UQ_STAT_CLUSTERS_FREED,
	UQ_STAT_COW_COPIES, UQ_STAT_COMPRESSED_WRITES,
	UQ_STAT_META_FLUSHES,     /* full metadata writebacks (flush, close, budget) */
	UQ_STAT_REFBLOCK_EVICTIONS, /* refcount blocks dropped from the bounded cache */
	UQ_STAT_L2_BATCH_WRITEBACKS, /* dirty L2 tables written to make room, no sync after */
	UQ_STAT_L2_TABLES_FREED,  /* L2 tables dropped by discards of their whole range */

	UQ_STAT_COUNT
};

struct uq_stats {
	size_t struct_size;        /* sizeof(the struct): set it before the call */
	uint64_t v[UQ_STAT_COUNT]; /* indexed by enum uq_stat */
};

/* Counters since open or the last uq_reset_stats. */
int uq_get_stats(uq_image *img, struct uq_stats *out);
int uq_reset_stats(uq_image *img);
/* "req_read_ops", ...; NULL past the end. */
const char *uq_stat_name(unsigned stat);

#ifdef __cplusplus
}
#endif
#endif
