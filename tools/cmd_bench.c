/* SPDX-License-Identifier: MIT */
/* uqcow bench: qemu-img bench's flags and output, DEPTH requests kept in
 * flight through the async API, plus --random offsets and JSON output. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

enum {
	OPT_PATTERN = CLI_OPT_FIRST_FREE,
	OPT_FLUSH_INTERVAL,
	OPT_NO_DRAIN,
	OPT_RANDOM,
};

struct bench {
	uq_image *img;
	uint64_t image_size;
	uint64_t count;          /* requests to send */
	unsigned depth;
	size_t size;             /* bytes per request */
	uint64_t step;
	uint64_t offset;         /* next sequential offset */
	bool write;
	bool random;
	uint64_t seed;
	uint64_t flush_interval; /* writes between flushes, 0: none */
	bool drain;              /* wait for in-flight requests before a flush */

	uint8_t *buf;            /* depth slices of size bytes */
	unsigned *free_slots;    /* stack of free slice indices */
	unsigned nfree;
	uint64_t sent, done;     /* data requests */
	unsigned in_flight;      /* data requests and flushes */
	bool flushing;
	int err;
};

struct slot_arg {
	struct bench *b;
	unsigned slot;           /* UINT_MAX: a flush */
};

static void req_done(void *arg, ssize_t res)
{
	struct slot_arg *a = arg;
	struct bench *b = a->b;

	b->in_flight--;
	if (res < 0 && !b->err)
		b->err = (int)res;
	if (a->slot == UINT_MAX) {
		b->flushing = false;
		free(a);
		return;
	}
	b->done++;
	b->free_slots[b->nfree++] = a->slot;
}

/* qemu-img bench's sequence: offset advances by step and wraps inside
 * [0, image_size - size]; --random draws size-aligned offsets instead. */
static uint64_t next_offset(struct bench *b)
{
	uint64_t off = b->offset, room = b->image_size - b->size;

	if (b->random) {
		uint64_t x = b->seed;

		/* xorshift64* */
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		b->seed = x;
		return ((x * 0x2545f4914f6cdd1dull) % (room / b->size + 1)) * b->size;
	}
	b->offset += b->step;
	if (b->image_size <= b->size)
		b->offset = 0;
	else
		b->offset %= room;
	return off;
}

static int submit_flush(struct bench *b)
{
	struct slot_arg *a = malloc(sizeof(*a));
	int ret;

	if (!a)
		return -ENOMEM;
	a->b = b;
	a->slot = UINT_MAX;
	b->flushing = true;
	b->in_flight++;
	ret = uq_aio_flush(b->img, req_done, a);
	if (ret < 0) {
		b->in_flight--;
		b->flushing = false;
		free(a);
	}
	return ret;
}

static int run_bench(struct bench *b, struct slot_arg *args)
{
	uint64_t since_flush = 0;
	int ret = 0;

	while ((b->done < b->count || b->in_flight) && !b->err) {
		while (b->nfree && b->sent < b->count && ret == 0) {
			struct slot_arg *a;
			uint64_t off;

			/* a flush every flush_interval writes; with draining,
			 * nothing else is in flight while it runs */
			if (b->flush_interval && since_flush >= b->flush_interval) {
				if (b->drain && b->in_flight)
					break;
				ret = submit_flush(b);
				since_flush = 0;
				if (ret < 0 || b->drain)
					break;
			}
			if (b->drain && b->flushing)
				break;
			a = &args[b->free_slots[--b->nfree]];
			off = next_offset(b);
			b->in_flight++;
			if (b->write)
				ret = uq_aio_write(b->img, b->buf + (size_t)a->slot * b->size,
						   b->size, off, 0, req_done, a);
			else
				ret = uq_aio_read(b->img, b->buf + (size_t)a->slot * b->size,
						  b->size, off, req_done, a);
			if (ret < 0) {
				b->in_flight--;
				break;
			}
			b->sent++;
			since_flush += b->write;
		}
		if (ret < 0)
			break;
		if (b->in_flight) {
			ret = uq_poll(b->img, 1);
			if (ret < 0)
				break;
			ret = 0;
		}
	}
	/* nothing may complete into freed buffers */
	while (b->in_flight && uq_poll(b->img, 1) > 0)
		;
	return ret < 0 ? ret : b->err;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_count(const char *what, const char *arg, uint64_t min, uint64_t max,
		       uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(arg, &end, 0);
	if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max) {
		cli_error("Invalid %s specified: '%s'", what, arg);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static void print_json(const struct bench *b, const struct uq_info *in, bool direct,
		       uint64_t start, double secs, const char *path)
{
	struct cli_json j;

	cli_json_init(&j, stdout);
	cli_json_begin(&j, NULL, '{');
	cli_json_str(&j, "operation", b->write ? "write" : "read");
	cli_json_u64(&j, "requests", b->count);
	cli_json_u64(&j, "request-size", b->size);
	cli_json_u64(&j, "depth", b->depth);
	cli_json_u64(&j, "offset", start);
	cli_json_u64(&j, "step", b->step);
	cli_json_bool(&j, "random", b->random);
	cli_json_u64(&j, "flush-interval", b->flush_interval);
	cli_json_str(&j, "cache", direct ? "none" : "writeback");
	cli_json_str(&j, "backend", in->backend);
	cli_json_double(&j, "seconds", 6, secs);
	cli_json_double(&j, "iops", 1, secs > 0 ? (double)b->count / secs : 0.0);
	cli_json_double(&j, "bytes-per-second", 1,
		  secs > 0 ? (double)b->count * (double)b->size / secs : 0.0);
	cli_print_stats(b->img, path, &j);
	cli_json_end(&j, '}');
	fputc('\n', stdout);
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ "output", required_argument, NULL, CLI_OPT_OUTPUT },
		{ "pattern", required_argument, NULL, OPT_PATTERN },
		{ "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
		{ "no-drain", no_argument, NULL, OPT_NO_DRAIN },
		{ "random", no_argument, NULL, OPT_RANDOM },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	struct bench b = {
		.count = 75000, .depth = 64, .size = 4096, .drain = true,
		.seed = 0x9e3779b97f4a7c15ull,
	};
	struct slot_arg *args = NULL;
	struct uq_info *in = NULL;
	uint64_t v, step = 0, start = 0, pattern = 0;
	bool json = false, quiet = false, step_set = false;
	int c, ret = -EINVAL;
	double t0, secs;

	while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", longopts, NULL)) != -1) {
		int r = cli_image_option(&o, c, optarg, false);

		if (r < 0)
			return CLI_EXIT_FAIL;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_bench, stdout);
			return CLI_EXIT_OK;
		case 'c':
			if (parse_count("request count", optarg, 1, INT_MAX, &b.count))
				return CLI_EXIT_FAIL;
			break;
		case 'd':
			if (parse_count("queue depth", optarg, 1, INT_MAX, &v))
				return CLI_EXIT_FAIL;
			b.depth = (unsigned)v;
			break;
		case 'n':
			/* qemu's Linux AIO: io_uring is the kernel async path here */
			o.backend = UQ_IO_URING;
			break;
		case 'i':
			if (!strcmp(optarg, "native"))
				o.backend = UQ_IO_URING;
			else if (cli_set_backend(&o, optarg))
				return CLI_EXIT_FAIL;
			break;
		case 'o':
			if (cli_parse_size(optarg, &start)) {
				cli_error("Invalid offset specified");
				return CLI_EXIT_FAIL;
			}
			break;
		case 'q':
			quiet = true;
			break;
		case 's':
			if (cli_parse_size(optarg, &v) || v == 0 || v > INT_MAX) {
				cli_error("Invalid buffer size specified");
				return CLI_EXIT_FAIL;
			}
			b.size = (size_t)v;
			break;
		case 'S':
			if (cli_parse_size(optarg, &step) || step > INT_MAX) {
				cli_error("Invalid step size specified");
				return CLI_EXIT_FAIL;
			}
			step_set = true;
			break;
		case 'w':
			b.write = true;
			o.flags |= UQ_OPEN_RDWR;
			break;
		case OPT_PATTERN:
			if (parse_count("pattern byte", optarg, 0, 0xff, &pattern))
				return CLI_EXIT_FAIL;
			break;
		case OPT_FLUSH_INTERVAL:
			if (parse_count("flush interval", optarg, 0, INT_MAX, &b.flush_interval))
				return CLI_EXIT_FAIL;
			break;
		case OPT_NO_DRAIN:
			b.drain = false;
			break;
		case OPT_RANDOM:
			b.random = true;
			break;
		case CLI_OPT_OUTPUT:
			if (cli_set_output(&json, optarg))
				return CLI_EXIT_FAIL;
			break;
		default:
			return cli_opt_error(&cmd_bench, c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_bad_usage(&cmd_bench, "expecting one image file name");
	if (b.flush_interval && !b.write) {
		cli_error("--flush-interval is only available in write tests");
		return CLI_EXIT_FAIL;
	}
	if (!b.drain && !b.flush_interval) {
		cli_error("--no-drain requires --flush-interval");
		return CLI_EXIT_FAIL;
	}
	b.step = step_set ? step : b.size;
	b.offset = start;
	if (cli_open_image(argv[optind], &o, 0, &b.img) < 0)
		return CLI_EXIT_FAIL;
	ret = cli_get_info(b.img, argv[optind], &in);
	if (ret < 0)
		goto out;
	b.image_size = in->virtual_size;
	if (b.size > b.image_size || start > b.image_size - b.size) {
		cli_error("%s: offset %" PRIu64 " + request size %zu is past the image "
			  "size %" PRIu64, argv[optind], start, b.size, b.image_size);
		ret = -EINVAL;
		goto out;
	}
	ret = -ENOMEM;
	if ((size_t)b.depth > SIZE_MAX / b.size / 2 ||
	    posix_memalign((void **)&b.buf, 4096, (size_t)b.depth * b.size)) {
		cli_error("out of memory for %u buffers of %zu bytes", b.depth, b.size);
		b.buf = NULL;
		goto out;
	}
	memset(b.buf, (int)pattern, (size_t)b.depth * b.size);
	b.free_slots = calloc(b.depth, sizeof(*b.free_slots));
	args = calloc(b.depth, sizeof(*args));
	if (!b.free_slots || !args) {
		cli_error("out of memory");
		goto out;
	}
	for (unsigned i = 0; i < b.depth; i++) {
		args[i] = (struct slot_arg){ .b = &b, .slot = i };
		b.free_slots[b.nfree++] = b.depth - 1 - i;
	}
	if (!quiet && !json) {
		if (b.random)
			printf("Sending %" PRIu64 " %s requests, %zu bytes each, %u in parallel "
			       "(random offsets, aligned to %zu bytes)\n", b.count,
			       b.write ? "write" : "read", b.size, b.depth, b.size);
		else
			printf("Sending %" PRIu64 " %s requests, %zu bytes each, %u in parallel "
			       "(starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
			       b.count, b.write ? "write" : "read", b.size, b.depth, start, b.step);
		if (b.flush_interval)
			printf("Sending flush every %" PRIu64 " requests\n", b.flush_interval);
		fflush(stdout);
	}
	/* the costs are the run's: from here, through the metadata writeback
	 * that close would do (flushed after the clock stops) */
	ret = uq_reset_stats(b.img);
	t0 = now();
	if (ret == 0)
		ret = run_bench(&b, args);
	secs = now() - t0;
	if (ret == 0 && b.write)
		ret = uq_flush(b.img);
	if (ret < 0) {
		cli_error_uq(ret, argv[optind]);
		goto out;
	}
	if (json) {
		print_json(&b, in, o.flags & UQ_OPEN_DIRECT, start, secs, argv[optind]);
	} else if (!quiet) {
		printf("Run completed in %3.3f seconds.\n"
		       "I/O backend: %s\n", secs, in->backend);
		cli_print_stats(b.img, argv[optind], NULL);
	}
out:
	if (b.img) {
		int r = uq_close(b.img);

		if (r < 0 && ret == 0) {
			cli_error_uq(r, argv[optind]);
			ret = r;
		}
	}
	free(args);
	free(b.free_slots);
	free(b.buf);
	free(in);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_bench = {
	.name = "bench",
	.summary = "time DEPTH parallel requests (qemu-img bench)",
	.run = run,
	.synopsis = "bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N [--no-drain]]\n"
		    "             [-i io_uring|psync] [-o OFFSET] [--pattern=N] [-q] [-s SIZE]\n"
		    "             [-S STEP] [-t CACHE] [-U] [-w] [--random] [--output=human|json] FILE",
	.help =
		"Sends COUNT requests of SIZE bytes, DEPTH of them in flight at once,\n"
		"starting at OFFSET and advancing by STEP (wrapping inside the image),\n"
		"and prints how long that took, as qemu-img bench does.\n"
		"  -c COUNT             requests to send (default 75000)\n"
		"  -d DEPTH             requests in flight (default 64)\n"
		"  -f FMT               qcow2 or raw (default: probe)\n"
		"  -i io_uring|psync    I/O backend (threads = psync, native = io_uring)\n"
		"  -n                   same as -i native\n"
		"  -o OFFSET            first offset (default 0)\n"
		"  -s SIZE              bytes per request (default 4096)\n"
		"  -S STEP              offset increment (default SIZE)\n"
		"  -t CACHE             none (O_DIRECT) or writeback (default)\n"
		"  -w                   write instead of read\n"
		"  -U, --force-share    read without the image locks that keep out writers\n"
		"                       (qemu-img -U; not with -w)\n"
		"  --pattern=N          byte written by -w (default 0)\n"
		"  --flush-interval=N   flush after every N writes\n"
		"  --no-drain           don't wait for in-flight writes before a flush\n"
		"  --random             random SIZE-aligned offsets instead of STEP\n"
		"  --output=human|json  json: one object with the timing, the backend and\n"
		"                       the costs (\"stats\")\n"
		"  -q                   print nothing\n"
		"The human output gives the I/O backend that ran (io_uring, or psync\n"
		"where io_uring can't be set up), then the run's exact costs: what\n"
		"uq_get_stats counted from the first request through the metadata\n"
		"writeback at the end (a flush after the clock stops, for -w), the\n"
		"counters that aren't 0 (see README.md, \"Exact costs\").\n",
};
