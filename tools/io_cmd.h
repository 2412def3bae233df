/* SPDX-License-Identifier: MIT */
/* What the commands of `uqcow io` share: the open image, qemu-io's report
 * lines, number and pattern parsing, and the write-side commands. */
#ifndef UQ_IO_CMD_H
#define UQ_IO_CMD_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "uqcow.h"

/* qemu's BDRV_REQUEST_MAX_BYTES: INT_MAX rounded down to a sector. */
#define MAX_REQUEST 2147483136ull

struct io_ctx {
	uq_image *img;
	const char *path;
	uint64_t size;
	bool readonly;
};

/* "wrote 4096/4096 bytes at offset 0" and the statistics line after it
 * (or one machine-parsable line with -C). */
void io_print_report(const char *op, const struct timespec *t, uint64_t off,
		     uint64_t count, uint64_t total, int cnt, bool parsable);
void io_elapsed(const struct timespec *t1, const struct timespec *t2,
		struct timespec *dt);

/* An offset or length with k/M/G... suffixes; error line on failure. */
int io_parse_num(const char *what, const char *arg, uint64_t *v);
/* A pattern byte, 0..255 (decimal, 0x hex or 0 octal). */
int io_parse_pattern(const char *arg, int *pat);
/* "uqcow: NAME: why" plus the command's usage line; returns -EINVAL. */
int io_cmd_usage(const char *name, const char *args, const char *fmt,
		 const char *arg);

#define WRITE_ARGS "[-bcCfnpquz] [-P pattern | -s source_file] off len"
#define DISCARD_ARGS "[-Cq] off len"

int io_do_write(struct io_ctx *x, int argc, char **argv);
int io_do_discard(struct io_ctx *x, int argc, char **argv);
int io_do_flush(struct io_ctx *x, int argc, char **argv);

#endif
