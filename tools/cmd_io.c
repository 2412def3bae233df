/* SPDX-License-Identifier: MIT */
/* uqcow io: qemu-io's command runner (-c CMD ...) with its output lines;
 * the command table, read and map. Write commands are in io_write.c. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "io_cmd.h"

#define MAX_ARGS 64

struct io_cmd {
	const char *name, *alt;
	int argmin, argmax;          /* positional arguments; -1: no limit */
	bool writes;
	int (*fn)(struct io_ctx *x, int argc, char **argv);
	const char *args;
};

/* ---- qemu-io's number and time formatting (cvtstr, timestr) ---- */

static void cvtstr(double v, char *buf, size_t len)
{
	static const char *const units[] = { " KiB", " MiB", " GiB", " TiB",
					     " PiB", " EiB" };
	const char *suffix = " bytes";
	char *trim;
	int i;

	for (i = 5; i >= 0; i--) {
		double unit = (double)(1ull << (10 * (i + 1)));

		if (v >= unit) {
			snprintf(buf, len - 4, "%.3f", v / unit);
			suffix = units[i];
			break;
		}
	}
	if (i < 0)
		snprintf(buf, len - 6, "%f", v);
	/* "64.000" prints as "64 KiB" */
	trim = strstr(buf, ".000");
	if (trim)
		*trim = '\0';
	strncat(buf, suffix, len - strlen(buf) - 1);
}

static void timestr(const struct timespec *t, char *buf, size_t len,
		    bool fixed)
{
	double frac = (double)t->tv_nsec / 1e9;
	unsigned s = (unsigned)t->tv_sec;

	if (fixed || t->tv_sec)
		snprintf(buf, len, "%u:%02u:%05.2f", s / 3600, (s % 3600) / 60,
			 (double)(s % 60) + frac);
	else
		snprintf(buf, len, "%05.2f sec", frac);
}

static double tdiv(double v, const struct timespec *t)
{
	double secs = (double)t->tv_sec + (double)t->tv_nsec / 1e9;

	return secs > 0 ? v / secs : 0;
}

void io_print_report(const char *op, const struct timespec *t, uint64_t off,
		     uint64_t count, uint64_t total, int cnt, bool parsable)
{
	char s1[64], s2[64], ts[64];

	timestr(t, ts, sizeof(ts), parsable);
	if (parsable) {
		/* bytes,ops,time,bytes/sec,ops/sec */
		printf("%" PRIu64 ",%d,%s,%.3f,%.3f\n", total, cnt, ts,
		       tdiv((double)total, t), tdiv(cnt, t));
		return;
	}
	cvtstr((double)total, s1, sizeof(s1));
	cvtstr(tdiv((double)total, t), s2, sizeof(s2));
	printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", op,
	       total, count, off);
	printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, cnt, ts, s2,
	       tdiv(cnt, t));
}

void io_elapsed(const struct timespec *t1, const struct timespec *t2,
		struct timespec *dt)
{
	dt->tv_sec = t2->tv_sec - t1->tv_sec;
	dt->tv_nsec = t2->tv_nsec - t1->tv_nsec;
	if (dt->tv_nsec < 0) {
		dt->tv_sec--;
		dt->tv_nsec += 1000000000L;
	}
}

/* qemu-io's dump_buffer: offset, 16 hex bytes, then the printable ones. */
static void dump_buffer(const uint8_t *buf, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len; i += 16) {
		uint64_t j;

		printf("%08" PRIx64 ":  ", off + i);
		for (j = 0; j < 16 && i + j < len; j++)
			printf("%02x ", buf[i + j]);
		printf(" ");
		for (j = 0; j < 16 && i + j < len; j++)
			putchar(isalnum(buf[i + j]) ? buf[i + j] : '.');
		printf("\n");
	}
}

int io_parse_num(const char *what, const char *arg, uint64_t *v)
{
	int ret = cli_parse_size(arg, v);

	if (ret == -ERANGE)
		cli_error("%s: argument too large -- %s", what, arg);
	else if (ret < 0)
		cli_error("%s: non-numeric argument, or extraneous/unrecognized "
			  "suffix -- %s", what, arg);
	return ret;
}

int io_parse_pattern(const char *arg, int *pat)
{
	char *end;
	long v = strtol(arg, &end, 0);

	if (*arg == '\0' || *end || v < 0 || v > 255) {
		cli_error("invalid pattern '%s' (a byte: 0..255 or 0x00..0xff)", arg);
		return -EINVAL;
	}
	*pat = (int)v;
	return 0;
}

/* "uqcow: read: why" and the command's usage line; returns -EINVAL. */
int io_cmd_usage(const char *name, const char *args, const char *fmt,
		 const char *arg)
{
	fflush(stdout);
	fprintf(stderr, "uqcow: %s: ", name);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nusage: %s %s\n", name, args);
	return -EINVAL;
}

/* ---- commands ---- */

#define READ_ARGS "[-Cqv] [-P pattern [-s off] [-l len]] off len"

static int do_read(struct io_ctx *x, int argc, char **argv)
{
	uint64_t off, count, pat_off = 0, pat_count = 0;
	bool verbose = false, quiet = false, parsable = false, pflag = false;
	bool sflag = false, lflag = false;
	struct timespec t1, t2, dt;
	uint8_t *buf = NULL;
	ssize_t n;
	int c, pattern = 0, ret = 0;

	optind = 0;
	while ((c = getopt(argc, argv, ":bCl:P:qs:v")) != -1) {
		switch (c) {
		case 'b':
			cli_error("read: -b (VM state) is not supported");
			return -ENOTSUP;
		case 'C':
			parsable = true;
			break;
		case 'l':
			if (io_parse_num("read -l", optarg, &pat_count))
				return -EINVAL;
			lflag = true;
			break;
		case 'P':
			if (io_parse_pattern(optarg, &pattern))
				return -EINVAL;
			pflag = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 's':
			if (io_parse_num("read -s", optarg, &pat_off))
				return -EINVAL;
			sflag = true;
			break;
		case 'v':
			verbose = true;
			break;
		default: {
			char opt[2] = { (char)optopt, '\0' };

			return io_cmd_usage("read", READ_ARGS, c == ':' ?
					 "option requires an argument -- '%s'" :
					 "invalid option -- '%s'", opt);
		}
		}
	}
	if (argc - optind != 2)
		return io_cmd_usage("read", READ_ARGS, "expected OFFSET and LENGTH%s", "");
	if (io_parse_num("read offset", argv[optind], &off) ||
	    io_parse_num("read length", argv[optind + 1], &count))
		return -EINVAL;
	if (count > MAX_REQUEST) {
		cli_error("read: length cannot exceed %llu, given %s", MAX_REQUEST,
			  argv[optind + 1]);
		return -EINVAL;
	}
	if (!pflag && (lflag || sflag))
		return io_cmd_usage("read", READ_ARGS, "-s and -l need -P%s", "");
	if (!lflag)
		pat_count = pat_off <= count ? count - pat_off : UINT64_MAX;
	if (pat_off > count || pat_count > count - pat_off) {
		cli_error("read: pattern verification range exceeds end of read data");
		return -EINVAL;
	}
	if (off > x->size || count > x->size - off) {
		cli_error("read failed: %s: offset %" PRIu64 " + length %" PRIu64
			  " is past the end of the image (%" PRIu64 " bytes)",
			  x->path, off, count, x->size);
		return -EIO;
	}
	/* Page-aligned for O_DIRECT; qemu-io fills fresh buffers with 0xab. */
	if (posix_memalign((void **)&buf, 4096, count ? count : 1)) {
		cli_error("read: out of memory for %" PRIu64 " bytes", count);
		return -ENOMEM;
	}
	memset(buf, 0xab, count);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	n = count ? uq_pread(x->img, buf, count, off) : 0;
	clock_gettime(CLOCK_MONOTONIC, &t2);
	if (n < 0) {
		char what[128];

		snprintf(what, sizeof(what), "read failed at offset %" PRIu64, off);
		cli_error_uq((int)n, what);
		ret = (int)n;
		goto out;
	}
	if ((uint64_t)n != count) {
		cli_error("read failed: short read at offset %" PRIu64
			  " (%zd of %" PRIu64 " bytes)", off, n, count);
		ret = -EIO;
		goto out;
	}
	if (pflag) {
		const uint8_t *p = buf + pat_off;

		for (uint64_t i = 0; i < pat_count; i++) {
			if (p[i] != pattern) {
				printf("Pattern verification failed at offset %" PRIu64
				       ", %" PRIu64 " bytes\n", off + pat_off, pat_count);
				ret = -EINVAL;
				break;
			}
		}
	}
	if (quiet)
		goto out;
	if (verbose)
		dump_buffer(buf, off, count);
	io_elapsed(&t1, &t2, &dt);
	io_print_report("read", &dt, off, count, count, 1, parsable);
out:
	free(buf);
	return ret;
}

/* qemu-io map: runs allocated (or not) in this image itself, as
 * bdrv_is_allocated sees it; the backing chain counts as unallocated. */
static int do_map(struct io_ctx *x, int argc, char **argv)
{
	uint64_t off = 0;

	(void)argc;
	(void)argv;
	while (off < x->size) {
		uint64_t start = off, len = 0;
		int alloc = -1;
		char s1[64], s2[64];

		while (off < x->size) {
			struct uq_extent e = { .struct_size = sizeof(e) };
			int ret = uq_block_status(x->img, off, x->size - off, &e);
			int a;

			if (ret < 0) {
				cli_error_uq(ret, x->path);
				return ret;
			}
			if (e.length == 0 || e.length > x->size - off) {
				cli_error("%s: unexpected end of image at offset %" PRIu64,
					  x->path, off);
				return -EIO;
			}
			a = e.present && e.depth == 0;
			if (alloc >= 0 && a != alloc)
				break;
			alloc = a;
			len += e.length;
			off += e.length;
		}
		cvtstr((double)len, s1, sizeof(s1));
		cvtstr((double)start, s2, sizeof(s2));
		printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n",
		       s1, len, alloc ? "    allocated" : "not allocated", s2, start);
	}
	return 0;
}

/* qemu-io's sleep: wait MS milliseconds with the image open (and its
 * locks held), e.g. to hold it while another program tries it. */
static int do_sleep(struct io_ctx *x, int argc, char **argv)
{
	struct timespec t;
	char *end;
	unsigned long long ms;

	(void)x;
	(void)argc;
	errno = 0;
	ms = strtoull(argv[1], &end, 10);
	if (errno || end == argv[1] || *end || argv[1][0] == '-')
		return io_cmd_usage("sleep", "milliseconds",
				    "invalid number of milliseconds: %s", argv[1]);
	t.tv_sec = (time_t)(ms / 1000);
	t.tv_nsec = (long)(ms % 1000) * 1000000;
	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
	return 0;
}

static const struct io_cmd commands[] = {
	{ "read", "r", 2, -1, false, do_read, READ_ARGS },
	{ "map", NULL, 0, 0, false, do_map, "" },
	{ "write", "w", 2, -1, true, io_do_write, WRITE_ARGS },
	{ "discard", "d", 2, -1, true, io_do_discard, DISCARD_ARGS },
	{ "flush", "f", 0, 0, true, io_do_flush, "" },
	{ "sleep", NULL, 1, 1, false, do_sleep, "milliseconds" },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct io_cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(commands[i].name, name) ||
		    (commands[i].alt && !strcmp(commands[i].alt, name)))
			return &commands[i];
	return NULL;
}

/* Split on blanks as qemu-io does (no quoting). Returns argc. */
static int split(char *line, char **argv)
{
	int argc = 0;

	for (char *p = strtok(line, " \t\n"); p && argc < MAX_ARGS;
	     p = strtok(NULL, " \t\n"))
		argv[argc++] = p;
	argv[argc] = NULL;
	return argc;
}

static int run_command(struct io_ctx *x, const char *text)
{
	char *line = strdup(text), *argv[MAX_ARGS + 1];
	const struct io_cmd *c;
	int argc, ret = 0;

	if (!line) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	argc = split(line, argv);
	if (argc == 0)
		goto out;
	c = find_cmd(argv[0]);
	if (!c) {
		cli_error("command \"%s\" not found", argv[0]);
		ret = -EINVAL;
		goto out;
	}
	if (argc - 1 < c->argmin || (c->argmax >= 0 && argc - 1 > c->argmax)) {
		char why[96];

		if (c->argmax < 0)
			snprintf(why, sizeof(why), "expected at least %d arguments",
				 c->argmin);
		else
			snprintf(why, sizeof(why), "expected %d arguments", c->argmax);
		ret = io_cmd_usage(c->name, c->args, "bad argument count: %s", why);
		goto out;
	}
	if (c->writes && x->readonly) {
		cli_error("command %s needs a writable image (opened with -r)",
			  c->name);
		ret = -EPERM;
		goto out;
	}
	argv[0] = (char *)c->name;   /* "w" runs as "write" */
	ret = c->fn(x, argc, argv);
out:
	free(line);
	return ret;
}

enum { OPT_STATS = CLI_OPT_FIRST_FREE };

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ "cmd", required_argument, NULL, 'c' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "format", required_argument, NULL, 'f' },
		{ "nocache", no_argument, NULL, 'n' },
		{ "stats", no_argument, NULL, OPT_STATS },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	struct io_ctx x = { .readonly = false };
	char **cmds = NULL;
	int ncmds = 0, c, failed = 0, ret;
	bool stats = false;

	while ((c = getopt_long(argc, argv, ":hc:rf:nt:i:o:U", longopts,
				NULL)) != -1) {
		int r = cli_image_option(&o, c, optarg, true);

		if (r < 0)
			goto fail;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_io, stdout);
			free(cmds);
			return CLI_EXIT_OK;
		case 'c':
			/* at most one command per argument: one allocation */
			if (!cmds && !(cmds = calloc((size_t)argc, sizeof(*cmds)))) {
				cli_error("out of memory");
				goto fail;
			}
			cmds[ncmds++] = optarg;
			break;
		case 'r':
			x.readonly = true;
			break;
		case OPT_STATS:
			stats = true;
			break;
		case 'n':
			o.flags |= UQ_OPEN_DIRECT;
			break;
		case 'i':
			if (cli_set_backend(&o, optarg))
				goto fail;
			break;
		default:
			free(cmds);
			return cli_opt_error(&cmd_io, c, argv);
		}
	}
	if (argc - optind != 1) {
		free(cmds);
		return cli_bad_usage(&cmd_io, "expecting one image file name");
	}
	x.path = argv[optind];
	/* Like qemu-io: read-write unless -r, whatever the commands are. */
	if (cli_open_image(x.path, &o, x.readonly ? 0 : UQ_OPEN_RDWR, &x.img) < 0)
		goto fail;
	if (cli_image_size(x.img, x.path, &x.size) < 0)
		goto fail;
	if (ncmds) {
		/* Like qemu-io: a failed command doesn't stop the next ones. */
		for (int i = 0; i < ncmds; i++)
			if (run_command(&x, cmds[i]) < 0)
				failed = 1;
	} else {
		/* No -c: commands from stdin, one per line, until EOF or quit. */
		char *line = NULL;
		size_t cap = 0;
		bool tty = isatty(STDIN_FILENO);

		for (;;) {
			if (tty) {
				printf("uqcow io> ");
				fflush(stdout);
			}
			if (getline(&line, &cap, stdin) < 0)
				break;
			line[strcspn(line, "\n")] = '\0';
			if (!strcmp(line, "quit") || !strcmp(line, "q"))
				break;
			if (run_command(&x, line) < 0)
				failed = 1;
			fflush(stdout);
		}
		free(line);
	}
	free(cmds);
	/* the costs include the metadata writeback close would do */
	if (stats && !x.readonly && uq_flush(x.img) < 0) {
		cli_error_uq(-EIO, x.path);
		failed = 1;
	}
	if (stats && cli_print_stats(x.img, x.path, NULL) < 0)
		failed = 1;
	/* Metadata still in memory is written here: a failure is reported. */
	ret = uq_close(x.img);
	if (ret < 0) {
		cli_error_uq(ret, x.path);
		failed = 1;
	}
	fflush(stdout);
	return failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
fail:
	free(cmds);
	if (x.img)
		uq_close(x.img);
	return CLI_EXIT_FAIL;
}

const struct cli_verb cmd_io = {
	.name = "io",
	.summary = "run qemu-io style commands on an image (qemu-io)",
	.run = run,
	.synopsis = "io [-r [-U]] [-f FMT] [-t CACHE | -n] [-i BACKEND] [--stats] -c CMD "
		    "[-c CMD ...] FILE",
	.help =
	"  -r             open read-only (default: read-write)\n"
	"  -U, --force-share\n"
	"                 with -r: without the image locks that keep out writers\n"
	"                 (qemu-io -U): works while another process writes the\n"
	"                 image, which may change as it is read\n"
	"  -f FMT         qcow2 or raw (default: probe)\n"
	"  -c CMD         run CMD; may repeat (without -c: read from stdin)\n"
	"  -t MODE, -n    cache mode; none / -n open with O_DIRECT\n"
	"  -i BACKEND     io_uring or psync (also --io)\n"
	"  -o l2-cache-size=SIZE,refcount-cache-size=SIZE\n"
	"  -o discard-no-unref=on\n"
	"                 (v3) discard and zero -u keep the image's clusters,\n"
	"                 marked zero, so later writes reuse them in place\n"
	"  -o pass-discard-request=off\n"
	"                 with discard-no-unref: don't punch the kept clusters\n"
	"  --stats        after the commands, flush and print the exact costs\n"
	"                 (uq_get_stats counters that aren't 0; README.md)\n"
	"\nCommands:\n"
	"  read [-Cqv] [-P pattern [-s off] [-l len]] off len\n"
	"                 read; -P checks every byte against pattern, -v dumps\n"
	"  map            allocated ranges of this image (not its backing)\n"
	"  write [-cCfnqu] [-P pattern | -s file | -z] off len\n"
	"                 write pattern bytes (default 0xcd) or a file's bytes;\n"
	"                 -z zeroes (-u may unmap), -c compressed (whole\n"
	"                 clusters), -f flush after (FUA), -q no report\n"
	"  discard [-Cq] off len   free the clusters (read back as zeros)\n"
	"  flush          write metadata and sync\n"
	"  sleep MS       wait MS milliseconds, holding the image open\n"
	"\nOffsets and lengths take k, M, G, T suffixes. Exit status 1 if any\n"
	"command failed.\n",
};
