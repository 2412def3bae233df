/* SPDX-License-Identifier: MIT */
/* Fault injection, for tests only (libuqcow doesn't contain it): a wrapper
 * file that records every change made through it, fails changes from a
 * chosen one on, and rebuilds what a crash could leave. */
#ifndef UQ_FAULT_H
#define UQ_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "io.h"

/* Sectors: the unit a torn write is made of. */
#define IO_FAULT_SECTOR 512

enum io_fault_kind {
	IO_FAULT_WRITE,
	IO_FAULT_PUNCH,
	IO_FAULT_TRUNCATE,
	IO_FAULT_FLUSH,     /* a completed fsync: everything before it is durable */
	IO_FAULT_PREALLOC,  /* a preallocation: the size grows to cover it */
};

/* One change the file accepted, in the order it accepted them. */
struct io_fault_op {
	enum io_fault_kind kind;
	uint64_t off;       /* write, punch, preallocation */
	uint64_t len;       /* bytes written, punched or preallocated; the new size
			     * of a truncate */
	uint8_t *data;      /* a copy of what a write wrote */
};

/* A whole file rebuilt from the record: what a crash could leave on disk. */
struct io_fault_image {
	uint8_t *data;
	uint64_t len;
	size_t cap;
};

struct io_fault;

/* Wrap inner in a file that records the changes made through it: inner's
 * contents now become the base that crash states are rebuilt from. The
 * wrapper owns inner (closing *outer closes it); on failure inner is left
 * as it was. Every request goes through the wrapper, under io_uring too
 * (it has no kernel fd). Not for files that several threads change at once.
 * The record outlives the file: read it after closing, then free it. */
int io_fault_wrap(struct io_file *inner, struct io_fault **fl, struct io_file **outer);
/* The same in the shape uq_image_wrap_file takes; arg is a struct io_fault **:
 *   uq_image_wrap_file(img, io_fault_wrap_fn, &fl)  */
int io_fault_wrap_fn(struct io_file *inner, void *arg, struct io_file **outer);
/* Stop recording: the file works as before; the record stays readable. */
void io_fault_detach(struct io_fault *fl);
/* Free the record (detaching it first if its file is still open). */
void io_fault_free(struct io_fault *fl);

/* Fail change number n (1-based, counting writes, punches, truncates,
 * preallocations and flushes since the wrap) with err (-EIO, -ENOSPC, ...)
 * instead of running it; with sticky, every later change fails too (the
 * disk has gone away).
 * n == 0 turns injection off. Reads always work. */
void io_fault_fail_at(struct io_fault *fl, uint64_t n, int err, bool sticky);
/* Changes issued so far (failed ones included), and how many failed. */
uint64_t io_fault_changes(const struct io_fault *fl);
uint64_t io_fault_failures(const struct io_fault *fl);
/* The first change that failed (its data not kept), or NULL. */
const struct io_fault_op *io_fault_first_failure(const struct io_fault *fl);

/* The record: changes that ran, in order. Pointers stay valid until the
 * next change or detach. */
size_t io_fault_nops(const struct io_fault *fl);
const struct io_fault_op *io_fault_op(const struct io_fault *fl, size_t i);

/* Images. The base is the file as it was at the wrap. */
int io_fault_image_base(const struct io_fault *fl, struct io_fault_image *out);
int io_fault_image_copy(const struct io_fault_image *src, struct io_fault_image *out);
void io_fault_image_free(struct io_fault_image *img);
/* Apply op to img; of a write or punch only the first `sectors` sectors
 * (counted at 512-byte boundaries of the file, the first one possibly
 * partial) land: a torn write. UINT64_MAX applies it all, 0 none. A
 * truncate or preallocation lands whole if sectors > 0; a flush changes
 * nothing. */
int io_fault_image_apply(struct io_fault_image *img, const struct io_fault_op *op,
			 uint64_t sectors);
/* Sectors a write or punch spans (what `sectors` counts up to). */
uint64_t io_fault_op_sectors(const struct io_fault_op *op);

/* The file a crash could leave: the base plus ops [0, durable) whole, then
 * of ops [durable, durable + nkeep) keep[i] sectors each (a subset of them,
 * some torn), applied in order. durable is normally just past a flush. */
int io_fault_crash_state(const struct io_fault *fl, size_t durable, const uint64_t *keep,
			 size_t nkeep, struct io_fault_image *out);

#endif
