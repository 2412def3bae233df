/* SPDX-License-Identifier: MIT */
/* Shared pieces of the uqcow command line: the verb table entry, open
 * options, size parsing, JSON output, the progress bar and error lines. */
#ifndef UQ_CLI_H
#define UQ_CLI_H

#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "uqcow.h"

/* Exit statuses. compare uses 1 for "different", so its errors are 2. */
#define CLI_EXIT_OK    0
#define CLI_EXIT_FAIL  1

/* How to open an image: the options every verb shares. Options given
 * before the verb fill in the defaults the verb starts from. */
struct cli_open {
	enum uq_format format;
	enum uq_backend backend;
	unsigned flags;          /* UQ_OPEN_* */
	uint64_t l2_cache_size;  /* 0: engine default */
	uint64_t refcount_cache_size;  /* 0: engine default */
	bool image_opts;         /* --image-opts: FILE is driver=...,file.filename=... */
};

/* One verb. run() gets argv with argv[0] = the verb name and returns the
 * process exit status. A new verb is a cmd_*.c file plus one table entry
 * in uqcow.c. */
struct cli_verb {
	const char *name;
	const char *summary;    /* one line for `uqcow --help` */
	int (*run)(int argc, char **argv, const struct cli_open *defaults);
	const char *synopsis;   /* after "uqcow ": "info [-f FMT] ... FILE" */
	const char *help;       /* option lines for `uqcow VERB --help` */
};

extern const struct cli_verb cmd_info;
extern const struct cli_verb cmd_check;
extern const struct cli_verb cmd_map;
extern const struct cli_verb cmd_convert;
extern const struct cli_verb cmd_compare;
extern const struct cli_verb cmd_io;
extern const struct cli_verb cmd_bench;
extern const struct cli_verb cmd_snapshot;
extern const struct cli_verb cmd_create;
extern const struct cli_verb cmd_amend;
extern const struct cli_verb cmd_resize;
extern const struct cli_verb cmd_bitmap;

/* Long options shared by every verb (and accepted before the verb).
 * Values above 0xff so they never clash with a short option. */
enum {
	CLI_OPT_IO = 0x100,
	CLI_OPT_CACHE,
	CLI_OPT_L2_CACHE,
	CLI_OPT_OUTPUT,        /* verbs with --output=human|json */
	CLI_OPT_RC_CACHE,
	CLI_OPT_IMAGE_OPTS,
	CLI_OPT_FIRST_FREE,    /* verbs number their own long options from here */
};

#define CLI_OPEN_LONGOPTS \
	{ "io", required_argument, NULL, CLI_OPT_IO }, \
	{ "cache", required_argument, NULL, CLI_OPT_CACHE }, \
	{ "l2-cache-size", required_argument, NULL, CLI_OPT_L2_CACHE }, \
	{ "refcount-cache-size", required_argument, NULL, CLI_OPT_RC_CACHE }, \
	{ "force-share", no_argument, NULL, 'U' }, \
	{ "image-opts", no_argument, NULL, CLI_OPT_IMAGE_OPTS }, \
	{ "help", no_argument, NULL, 'h' }

void cli_open_defaults(struct cli_open *o);

/* Apply a shared option (CLI_OPT_IO/CACHE/L2_CACHE, 'U'). Returns 1 if
 * handled, 0 if opt isn't a shared one, -EINVAL after printing why. */
int cli_open_option(struct cli_open *o, int opt, const char *arg);

/* cli_open_option's options plus those every verb on one image gives the
 * same meaning: -f FMT, -t CACHE and, where dash_o (bench and amend use -o
 * otherwise), -o k=v,... Same returns. */
int cli_image_option(struct cli_open *o, int opt, const char *arg, bool dash_o);

/* -f FMT, -t/-T CACHE, --io=BACKEND, -o k=v,... (open options). Each
 * returns 0 or -EINVAL after printing why. */
int cli_set_format(enum uq_format *fmt, const char *arg);
int cli_set_cache(struct cli_open *o, const char *arg);
int cli_set_backend(struct cli_open *o, const char *arg);
int cli_set_open_options(struct cli_open *o, const char *arg);

/* Open path; on failure prints the error line and returns -errno. With
 * o->image_opts, path is qemu's --image-opts form: driver=qcow2|raw,
 * file.filename=PATH (or filename=), cache.direct=on|off and the -o open
 * options (l2-cache-size, refcount-cache-size, discard-no-unref,
 * pass-discard-request); ",," is a literal comma. */
int cli_open_image(const char *path, const struct cli_open *o,
		   unsigned extra_flags, uq_image **img);

/* For output the command line writes itself (raw files): hold path's
 * image locks as a writer, through the library, while it does. Call it
 * on the open file before truncating it; on a conflict (or any failure)
 * prints why and returns -errno. uq_close(*hold) releases them. */
int cli_lock_output(const char *path, uq_image **hold);

/* --output=human|json: sets *json. */
int cli_set_output(bool *json, const char *arg);

/* Sizes and offsets as qemu-img takes them: 4096, 0x1000, 64k, 1.5G
 * (k, M, G, T, P, E; binary multiples; b or B for bytes). */
int cli_parse_size(const char *s, uint64_t *out);

/* qemu's human size: "64 MiB", "1.25 MiB", "0 B". buf >= 32 bytes. */
void cli_size_str(uint64_t v, char *buf, size_t len);

/* Error lines: "uqcow: ..." on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "uqcow: " + uq_errmsg(), or "what: strerror(-err)" when the engine
 * left no message. */
void cli_error_uq(int err, const char *what);

/* uq_get_info into a new struct (it is large: kept off the stack);
 * reports a failure under path. The caller frees *out. */
int cli_get_info(uq_image *img, const char *path, struct uq_info **out);

/* The virtual size alone, through cli_get_info. */
int cli_image_size(uq_image *img, const char *path, uint64_t *size);

/* A verb's usage: to stdout for --help, to stderr after a bad option. */
void cli_usage(const struct cli_verb *v, FILE *f);
/* Print "uqcow: MSG" plus a hint to try --help; returns CLI_EXIT_FAIL. */
int cli_bad_usage(const struct cli_verb *v, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* After getopt returned '?' or ':' (optstrings start with ':' and opterr
 * is 0): say which option was wrong, print usage; returns CLI_EXIT_FAIL. */
int cli_opt_error(const struct cli_verb *v, int c, char **argv);

/* Pretty JSON as qemu prints it: 4-space indent, "key": value. */
struct cli_json {
	FILE *f;
	int depth;
	bool fresh;   /* nothing printed yet in the innermost container */
};

void cli_json_init(struct cli_json *j, FILE *f);
void cli_json_begin(struct cli_json *j, const char *key, char open);
void cli_json_end(struct cli_json *j, char close);
void cli_json_str(struct cli_json *j, const char *key, const char *val);
void cli_json_u64(struct cli_json *j, const char *key, uint64_t val);
void cli_json_double(struct cli_json *j, const char *key, int decimals, double val);
void cli_json_bool(struct cli_json *j, const char *key, bool val);
/* A quoted, escaped JSON string (qemu's escaping: \uXXXX outside ASCII). */
void cli_json_quote(FILE *f, const char *s);

/* The image's exact costs since open or the last uq_reset_stats (names
 * as uq_stat_name gives them): into j as a "stats" object with every
 * counter, or, with j NULL, on stdout as "  name  value" lines for the
 * counters that aren't 0. */
int cli_print_stats(uq_image *img, const char *path, struct cli_json *j);

/* "    (12.34/100%)\r" on stderr, as qemu-img -p draws it. */
struct cli_progress {
	bool on;
	uint64_t total;
	uint64_t done;
	int shown;    /* last whole percent drawn, -1 before the first */
};

void cli_progress_start(struct cli_progress *p, bool on, uint64_t total);
void cli_progress_add(struct cli_progress *p, uint64_t bytes);
void cli_progress_end(struct cli_progress *p);

/* Make img (open read-only) read as a snapshot: -l's argument, a name or
 * ID, or snapshot.id=ID / snapshot.name=NAME. Prints why on failure. */
int cli_snapshot_select(uq_image *img, const char *param);

/* True if every byte of buf is zero. */
bool cli_is_zero(const void *buf, size_t len);

#endif
