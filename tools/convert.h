/* SPDX-License-Identifier: MIT */
/* uqcow convert's copy state and output formats: the copy loop in
 * cmd_convert.c drives a target (raw file or qcow2 image) through these. */
#ifndef UQ_CONVERT_H
#define UQ_CONVERT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cli.h"
#include "imgopts.h"

#define CONV_BUF       (1u << 20)  /* bytes per read request (at least) */
#define CONV_DEPTH     16          /* requests in flight by default */
#define CONV_MAX_DEPTH 64
#define SPARSE_GRAIN   4096        /* qemu-img convert's default -S 4k */

struct conv;

/* One buffer: read from the source, then written out (possibly as
 * several writes, all-zero blocks skipped). Free again when the read
 * and every write from it have completed. */
struct slot {
	struct conv *c;
	uint8_t *buf;
	uint64_t off;
	size_t len;
	ssize_t res;        /* the read's result */
	enum { SLOT_FREE, SLOT_READ, SLOT_WRITE } state;
	bool read_done;
	unsigned writes;    /* writes from buf still in flight */
};

/* An output format. write() either completes before returning or queues
 * the write, counts it in s->writes and calls conv_write_done() from
 * poll(). poll is NULL for synchronous targets. */
struct target_ops {
	const char *format;
	int (*create)(struct conv *c);
	int (*write)(struct conv *c, struct slot *s, const uint8_t *buf,
		     size_t len, uint64_t off);
	int (*poll)(struct conv *c, bool wait);
	int (*close)(struct conv *c, bool sync);
};

struct conv {
	uq_image *img;            /* source */
	const char *src, *dst;
	uint64_t size, pos;       /* source virtual size; next offset to read */
	uint64_t st_start, st_end;/* block status cached for [st_start, st_end) */
	bool st_zero;
	bool sparse;              /* output reads zeros where nothing is written */
	bool compress;            /* -c: whole clusters, compressed */
	uint64_t align;           /* read ranges start and end on this unit */
	size_t grain;             /* all-zero blocks of this size aren't written */
	size_t bufsize;
	const struct target_ops *out;
	struct imgopts opts;      /* -o, for qcow2 output */
	struct cli_open dst_open; /* backend and cache for qcow2 output */
	int fd;                   /* raw output */
	uq_image *out_img;        /* qcow2 output; raw: holds its image locks */
	uint64_t out_size;        /* its virtual size (rounded up to 512) */
	struct slot slots[CONV_MAX_DEPTH];
	unsigned nslots, busy, reads, writes;
	int write_err;            /* first failed write */
	uint64_t write_err_off;
	struct cli_progress prog;
};

extern const struct target_ops conv_raw_target;
extern const struct target_ops conv_qcow2_target;

/* A queued write finished: for targets' completion callbacks. */
void conv_write_done(struct slot *s, ssize_t res);

#endif
