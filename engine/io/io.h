/* SPDX-License-Identifier: MIT */
/* I/O backends behind one small ops table: a file handle plus a queue that
 * batches requests and reports completions through callbacks. */
#ifndef UQ_IO_H
#define UQ_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct io_req;
struct io_queue;

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

/* A file: an fd, or an in-memory byte array (IO_MEM files). */
struct io_file {
	int fd;               /* -1 for memory files */
	unsigned flags;
	uint8_t *mem;         /* memory files */
	uint64_t mem_len;
	size_t mem_cap;
	uint64_t mem_limit;   /* writes past this fail with ENOSPC (0 = none) */
	unsigned align;       /* required alignment with IO_DIRECT (else 1) */
	/* A hook the fault backend uses to observe requests; NULL otherwise. */
	void *hook;
	/* Unique for the life of the process: lets a queue that registered
	 * this file tell it from a later file that reused the fd number. */
	uint64_t id;
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

/* Files. Memory files work with every backend (executed inline). */
int io_file_open(const char *path, unsigned flags, struct io_file **f);
int io_file_open_mem(const void *data, size_t len, unsigned flags, struct io_file **f);
void io_file_close(struct io_file *f);
int io_file_size(struct io_file *f, uint64_t *size);
int io_file_allocated(struct io_file *f, uint64_t *bytes); /* st_blocks * 512 */
int io_file_truncate(struct io_file *f, uint64_t size);
/* Reserve the blocks of [off, off+len), growing the size to cover it
 * (posix_fallocate; preallocation=falloc). */
int io_file_preallocate(struct io_file *f, uint64_t off, uint64_t len);
/* First offset at or after off holding data / lying in a hole (end of file
 * counts as one); -ENXIO at or past end of file, or no data follows. */
int io_file_seek_data(struct io_file *f, uint64_t off, uint64_t *pos);
int io_file_seek_hole(struct io_file *f, uint64_t off, uint64_t *pos);
/* Device and inode, to tell files apart; -ENOTSUP for memory files. */
int io_file_identity(struct io_file *f, uint64_t *dev, uint64_t *ino);

/* Synchronous helpers for setup paths (open, create, check): they run
 * inline, without a queue. Short reads past EOF are zero-filled. */
int io_pread_full(struct io_file *f, void *buf, size_t len, uint64_t off);
int io_pwrite_full(struct io_file *f, const void *buf, size_t len, uint64_t off);
int io_fsync(struct io_file *f);

/* Inline execution of one request on a file (used by psync and for memory
 * files under any backend). Returns the byte count or -errno. */
ssize_t io_exec_sync(struct io_req *r);

/* Memory-file internals (mem.c), shared with file.c: io_exec_sync and
 * io_file_truncate hand requests on files with fd == -1 to these. */
ssize_t io_mem_exec(struct io_req *r);
int io_mem_truncate(struct io_file *f, uint64_t size);

#endif
