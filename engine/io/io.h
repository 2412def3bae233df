/* SPDX-License-Identifier: MIT */
/* I/O as layers: every file is an object behind one ops table, and a queue
 * batches requests on files and reports completions through callbacks.
 *
 * Files. The fd file (file.c) and the memory file (mem.c) implement the
 * table. A wrapper is a file over an inner file that implements the same
 * table, changing what it must and forwarding the rest (io_fwd_*, wrap.c).
 * Engine code reaches a file only through the table, so a wrapper sees
 * everything the engine does to the file it wraps.
 *
 * Queues. The io_uring backend hands a request to the kernel when its file
 * has a kernel fd (kernel_fd >= 0); every other request, and every request
 * under psync, runs inline through the ops (io_exec_sync).
 *
 * Writing a wrapper. Embed struct io_file first, set it up with
 * io_wrap_init (it copies flags and alignment and takes a fresh id: io_uring
 * registers files by id, so a wrapper must not share its inner's), own the
 * inner file (closing the wrapper closes it), and fill the table with your
 * ops and io_fwd_* for the rest. A wrapper that must see every request,
 * queued ones included, returns -1 from kernel_fd (io_no_kernel_fd): under
 * io_uring its requests then run inline, through it, in queue order. One
 * that only changes synchronous calls may forward kernel_fd instead.
 * Wrappers stack: each one's inner may be another wrapper.
 *
 * Two wrappers exist. Fault injection (tests/lib/fault.c, test-only)
 * records and fails changes; it must see every request, so it has no
 * kernel fd. The accounting layer (count.c) is always on under every image
 * file: it counts in its ops and forwards, keeps its inner's kernel fd so
 * io_uring's kernel path stays, and sees the requests that take that path
 * through observe.
 */
#ifndef UQ_IO_H
#define UQ_IO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct io_req;
struct io_queue;
struct io_file;

/* Runs from io_reap() on the thread that reaps; may queue new requests. */
typedef void (*io_done_fn)(struct io_req *r, ssize_t res);

enum io_op {
	IO_READ,   /* a short read at end of file is zero-filled: res == len */
	IO_WRITE,
	IO_FSYNC,
	IO_PUNCH,  /* deallocate [off, off+len) keeping the size; reads zeros */
};

struct io_req {
	enum io_op op;
	struct io_file *file;
	void *buf;
	size_t len;
	uint64_t off;
	io_done_fn done;
	void *priv;           /* owner's context */
	/* backend-private */
	struct io_req *next;
	ssize_t res;
};

#define IO_RDWR   (1u << 0)
#define IO_CREATE (1u << 1)  /* create or truncate (O_CREAT|O_TRUNC) */
#define IO_DIRECT (1u << 2)  /* O_DIRECT; misaligned reads bounce */
#define IO_EXCL   (1u << 3)  /* with IO_CREATE: fail if it exists */
#define IO_SHARE  (1u << 4)  /* read-only, sharing everything (qemu's -U) */

/*
 * The ops table. Every op returns 0 or -errno. The dispatchers below check
 * ranges first (offsets fit off_t, off + len doesn't wrap) and skip empty
 * transfers, so an op sees valid, non-empty ranges.
 */
struct io_file_ops {
	/* All len bytes at off; what lies past end of file reads as zeros. */
	int (*read)(struct io_file *f, void *buf, size_t len, uint64_t off);
	/* All len bytes at off; the file grows to cover them. */
	int (*write)(struct io_file *f, const void *buf, size_t len, uint64_t off);
	/* Deallocate [off, off+len) keeping the size: it reads as zeros
	 * (written as zeros where the file system can't punch). */
	int (*punch)(struct io_file *f, uint64_t off, uint64_t len);
	/* Everything written so far is durable (fdatasync). */
	int (*fsync)(struct io_file *f);
	/* Set the size; what grows reads as zeros. */
	int (*truncate)(struct io_file *f, uint64_t size);
	/* Reserve the blocks of [off, off+len), growing the size to cover it
	 * (posix_fallocate; preallocation=falloc). */
	int (*preallocate)(struct io_file *f, uint64_t off, uint64_t len);
	int (*size)(struct io_file *f, uint64_t *size);
	/* Bytes the file occupies (st_blocks * 512). */
	int (*allocated)(struct io_file *f, uint64_t *bytes);
	/* First offset at or after off that holds data (hole false) or lies
	 * in a hole (hole true; end of file counts as one); -ENXIO when off
	 * is at or past end of file, or no data follows. */
	int (*seek)(struct io_file *f, uint64_t off, bool hole, uint64_t *pos);
	/* Device and inode, to tell files apart; -ENOTSUP when it has none. */
	int (*identity)(struct io_file *f, uint64_t *dev, uint64_t *ino);
	/* The fd io_uring may hand requests on this file to, or -1: they
	 * then run inline through the ops. Constant for the file's life. */
	int (*kernel_fd)(struct io_file *f);
	/* Optional: told of each queued request the kernel runs on this file
	 * (through a kernel fd forwarded from below), which bypasses the ops;
	 * once per request, when it is queued. */
	void (*observe)(struct io_file *f, const struct io_req *r);
	/* Release the file; a wrapper closes its inner file too. */
	void (*close)(struct io_file *f);
};

struct io_file {
	const struct io_file_ops *ops;
	struct io_file *inner;   /* a wrapper's file underneath; NULL otherwise */
	unsigned flags;          /* IO_* the file was opened with */
	unsigned align;          /* required alignment with IO_DIRECT (else 1) */
	/* Unique for the life of the process: lets a queue that registered
	 * this file tell it from a later file that reused the fd number. */
	uint64_t id;
	/* Image locks, fixed at open: true while the file holds them. A file
	 * that should but can't (no OFD locks on its file system) has
	 * lock_err, the errno that said so; a memory file has neither. */
	bool locked;
	int lock_err;
};

struct io_backend {
	const char *name;
	int (*queue_init)(struct io_queue **q, unsigned depth);
	void (*queue_free)(struct io_queue *q);
	/* Add r to the pending batch. Never blocks; if the ring is full the
	 * request waits on an overflow list until space frees up. */
	void (*queue)(struct io_queue *q, struct io_req *r);
	/* Hand pending requests to the kernel (or execute them). */
	int (*submit)(struct io_queue *q);
	/* Submit, then wait until at least min requests completed (fewer if
	 * fewer are in flight), calling their done callbacks. Returns how
	 * many completed, or -errno. */
	int (*reap)(struct io_queue *q, unsigned min);
	/* Requests queued or in flight and not yet completed. */
	unsigned (*pending)(struct io_queue *q);
};

struct io_queue {
	const struct io_backend *be;
};

extern const struct io_backend io_uring_backend;
extern const struct io_backend io_psync_backend;

/* io_uring if it can be set up (ENOSYS/EPERM/ENOMEM fall back), else psync.
 * force: NULL for automatic, or "io_uring" / "psync". */
int io_queue_create(const char *force, unsigned depth, struct io_queue **q);

static inline void io_queue_free(struct io_queue *q) { if (q) q->be->queue_free(q); }
static inline void io_queue_req(struct io_queue *q, struct io_req *r) { q->be->queue(q, r); }
static inline int io_submit(struct io_queue *q) { return q->be->submit(q); }
static inline int io_reap(struct io_queue *q, unsigned min) { return q->be->reap(q, min); }
static inline unsigned io_pending(struct io_queue *q) { return q->be->pending(q); }
static inline const char *io_backend_name(struct io_queue *q) { return q->be->name; }

/* Opening. io_file_open locks the file as QEMU locks its image files
 * (lock.c) before anything reads or writes it: a conflict fails with
 * -EAGAIN and a message naming the permission; IO_CREATE truncates only
 * once the locks are held. Where the file system has no OFD locks the
 * open goes on without them (lock_err). Its messages start with the path.
 * A memory file holds a copy of data and has no locks; it works with
 * every backend (inline). io_mem_set_limit makes growing it past bytes
 * fail with ENOSPC (0: no limit); -EINVAL on a file that isn't a memory
 * file. */
int io_file_open(const char *path, unsigned flags, struct io_file **f);
int io_file_open_mem(const void *data, size_t len, unsigned flags, struct io_file **f);
int io_mem_set_limit(struct io_file *f, uint64_t bytes);
void io_file_close(struct io_file *f);

/* Image locks (lock.c), QEMU's block-layer permission bits: byte 100+i
 * is held while having bit i, byte 200+i while refusing to share it. */
#define IO_PERM_CONSISTENT_READ (1u << 0)
#define IO_PERM_WRITE           (1u << 1)
#define IO_PERM_WRITE_UNCHANGED (1u << 2)
#define IO_PERM_RESIZE          (1u << 3)
#define IO_PERM_ALL             0xfu

/* On fd, an open file description of path: hold perm and refuse to share
 * what shared lacks, then check that no other open file description (in
 * this process or another) conflicts. 0: held, or *why_none set to the
 * errno that says the file system can't lock (nothing held). -EAGAIN on a
 * conflict, with a message naming path and the permission; nothing held.
 * The locks go when the description is closed. */
int io_lock_take(int fd, const char *path, unsigned perm, unsigned shared,
		 int *why_none);
/* io_lock_take with what an open with these IO_* flags takes. */
int io_lock_open(int fd, const char *path, unsigned flags, int *why_none);
/* Drop every image lock the description holds. Closing fd isn't enough
 * when io_uring registered it: the ring keeps the description, and its
 * locks, until the ring is torn down, which the kernel finishes later. */
void io_lock_release(int fd);

/* Dispatchers over the table (ops.c): what engine code calls. They run
 * inline, without a queue. */
int io_pread_full(struct io_file *f, void *buf, size_t len, uint64_t off);
int io_pwrite_full(struct io_file *f, const void *buf, size_t len, uint64_t off);
int io_punch(struct io_file *f, uint64_t off, uint64_t len);
int io_fsync(struct io_file *f);
int io_file_truncate(struct io_file *f, uint64_t size);
int io_file_preallocate(struct io_file *f, uint64_t off, uint64_t len);
int io_file_size(struct io_file *f, uint64_t *size);
int io_file_allocated(struct io_file *f, uint64_t *bytes);
int io_file_seek_data(struct io_file *f, uint64_t off, uint64_t *pos);
int io_file_seek_hole(struct io_file *f, uint64_t off, uint64_t *pos);
int io_file_identity(struct io_file *f, uint64_t *dev, uint64_t *ino);
int io_file_kernel_fd(struct io_file *f);

/* The accounting layer (count.c): a wrapper counting what reaches inner. */
enum io_count {
	IO_CNT_READ_OPS, IO_CNT_READ_BYTES, IO_CNT_WRITE_OPS, IO_CNT_WRITE_BYTES,
	IO_CNT_SYNC_OPS, IO_CNT_PUNCH_OPS, IO_CNT_PUNCH_BYTES,
	IO_CNT_FALLOC_OPS, IO_CNT_FALLOC_BYTES, IO_CNT_TRUNCATE_OPS,
	IO_CNT_COUNT
};
struct io_counts {
	_Atomic uint64_t v[IO_CNT_COUNT];
};
int io_count_wrap(struct io_file *inner, struct io_file **out);
/* The counters of the first accounting layer at or under f, or NULL. */
const struct io_counts *io_counts_of(struct io_file *f);
/* For queues: r goes to the kernel; tell the files that observe. */
void io_observe_kernel(const struct io_req *r);

/* Inline execution of one request through its file's ops (psync, and
 * io_uring for files without a kernel fd). Returns the byte count of a
 * read or write, 0 for the others, or -errno. */
ssize_t io_exec_sync(struct io_req *r);

/* For implementations: set up a base file with a fresh id. */
void io_file_init(struct io_file *f, const struct io_file_ops *ops, unsigned flags,
		  unsigned align);

/* For wrappers (wrap.c): set up outer over inner, and ops that forward to
 * f->inner. io_fwd_close closes inner and frees f: for wrappers allocated
 * with malloc, struct io_file first, with nothing else to release. */
void io_wrap_init(struct io_file *outer, const struct io_file_ops *ops,
		  struct io_file *inner);
int io_fwd_read(struct io_file *f, void *buf, size_t len, uint64_t off);
int io_fwd_write(struct io_file *f, const void *buf, size_t len, uint64_t off);
int io_fwd_punch(struct io_file *f, uint64_t off, uint64_t len);
int io_fwd_fsync(struct io_file *f);
int io_fwd_truncate(struct io_file *f, uint64_t size);
int io_fwd_preallocate(struct io_file *f, uint64_t off, uint64_t len);
int io_fwd_size(struct io_file *f, uint64_t *size);
int io_fwd_allocated(struct io_file *f, uint64_t *bytes);
int io_fwd_seek(struct io_file *f, uint64_t off, bool hole, uint64_t *pos);
int io_fwd_identity(struct io_file *f, uint64_t *dev, uint64_t *ino);
int io_fwd_kernel_fd(struct io_file *f);
int io_no_kernel_fd(struct io_file *f);   /* -1: see every request */
void io_fwd_close(struct io_file *f);

#endif
