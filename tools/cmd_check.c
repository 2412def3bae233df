/* SPDX-License-Identifier: MIT */
/* uqcow check: consistency check and repair with qemu-img check's output
 * (human and JSON), problem lines on stderr and exit codes. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* qemu-img check's exit statuses */
#define EXIT_CORRUPT 2
#define EXIT_LEAKS   3
#define EXIT_NOTSUP  63

struct check_ctx {
	struct cli_progress prog;
	uint64_t lines;          /* problem lines printed */
};

static void report_line(void *arg, const char *line)
{
	struct check_ctx *x = arg;

	x->lines++;
	fflush(stdout);
	fprintf(stderr, "%s\n", line);
}

static void progress(void *arg, uint64_t done, uint64_t total)
{
	struct check_ctx *x = arg;

	x->prog.total = total;
	if (done > x->prog.done)
		cli_progress_add(&x->prog, done - x->prog.done);
}

enum { OPT_MEMORY = CLI_OPT_FIRST_FREE };

static void dump_human(const struct uq_check_result *r, bool memory)
{
	if (!(r->corruptions || r->leaks || r->check_errors)) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%" PRIu64 " errors were found on the image.\n"
			       "Data may be corrupted, or further writes to the image "
			       "may corrupt it.\n", r->corruptions);
		if (r->leaks)
			printf("\n%" PRIu64 " leaked clusters were found on the image.\n"
			       "This means waste of disk space, but no harm to data.\n",
			       r->leaks);
		if (r->check_errors)
			printf("\n%" PRIu64 " internal errors have occurred during the "
			       "check.\n", r->check_errors);
	}
	if (r->total_clusters && r->allocated_clusters)
		printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, "
		       "%0.2f%% compressed clusters\n", r->allocated_clusters,
		       r->total_clusters,
		       (double)r->allocated_clusters * 100.0 / (double)r->total_clusters,
		       (double)r->fragmented_clusters * 100.0 / (double)r->allocated_clusters,
		       (double)r->compressed_clusters * 100.0 / (double)r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
	/* only when asked: the lines above are qemu-img's, compared as such */
	if (memory)
		printf("Check memory need: %" PRIu64 " bytes (%.1f MiB), besides the "
		       "image's caches\n", r->memory_need,
		       (double)r->memory_need / (1 << 20));
}

/* qemu-img 7.2 prints the keys in the order its QDict hashes them
 * (bucket order of tdb_hash(key) % 512), and optional ones only when
 * nonzero; this table is that order. */
static void dump_json(const struct uq_check_result *r, const char *filename, bool memory)
{
	const struct {
		const char *key;
		uint64_t v;
		bool always;
	} keys[] = {
		{ "image-end-offset", r->image_end_offset, false },
		{ "compressed-clusters", r->compressed_clusters, false },
		{ "total-clusters", r->total_clusters, false },
		{ "corruptions", r->corruptions, false },
		{ "corruptions-fixed", r->corruptions_fixed, false },
		{ "check-errors", r->check_errors, true },
		{ "leaks", r->leaks, false },
		{ "leaks-fixed", r->leaks_fixed, false },
		{ "allocated-clusters", r->allocated_clusters, false },
		{ "filename", 0, true },
		{ "format", 0, true },
		{ "fragmented-clusters", r->fragmented_clusters, false },
	};
	struct cli_json j;

	cli_json_init(&j, stdout);
	cli_json_begin(&j, NULL, '{');
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!strcmp(keys[i].key, "filename"))
			cli_json_str(&j, "filename", filename);
		else if (!strcmp(keys[i].key, "format"))
			cli_json_str(&j, "format", "qcow2");
		else if (keys[i].always || keys[i].v)
			cli_json_u64(&j, keys[i].key, keys[i].v);
	}
	if (memory)
		cli_json_u64(&j, "check-memory-need", r->memory_need);
	cli_json_end(&j, '}');
	putchar('\n');
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ "output", required_argument, NULL, CLI_OPT_OUTPUT },
		{ "repair", required_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "progress", no_argument, NULL, 'p' },
		{ "memory", no_argument, NULL, OPT_MEMORY },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	struct uq_check_result r = { .struct_size = sizeof(r) };
	struct check_ctx x = { 0 };
	unsigned flags = 0;
	bool json = false, quiet = false, prog = false, memory = false;
	uq_image *img = NULL;
	const char *path;
	int c, ret, status;

	while ((c = getopt_long(argc, argv, ":hf:r:T:t:o:qpU", longopts, NULL)) != -1) {
		int rr = cli_image_option(&o, c, optarg, true);

		if (rr < 0)
			return CLI_EXIT_FAIL;
		if (rr > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_check, stdout);
			return CLI_EXIT_OK;
		case 'r':
			if (!strcmp(optarg, "leaks")) {
				flags = UQ_CHECK_REPAIR_LEAKS;
			} else if (!strcmp(optarg, "all")) {
				flags = UQ_CHECK_REPAIR_ALL;
			} else {
				cli_error("Unknown option value for -r (expecting 'leaks' or "
					  "'all'): %s", optarg);
				return CLI_EXIT_FAIL;
			}
			break;
		case 'T':
		case 'q':
			quiet = true;
			break;
		case 'p':
			prog = true;
			break;
		case OPT_MEMORY:
			memory = true;
			break;
		case CLI_OPT_OUTPUT:
			if (cli_set_output(&json, optarg))
				return CLI_EXIT_FAIL;
			break;
		default:
			return cli_opt_error(&cmd_check, c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_bad_usage(&cmd_check, "expecting one image file name");
	path = argv[optind];
	/* a repair may need to open a corrupt image read-write */
	if (cli_open_image(path, &o, flags ? UQ_OPEN_RDWR | UQ_OPEN_REPAIR : 0, &img) < 0)
		return CLI_EXIT_FAIL;
	r.report = report_line;
	r.progress = progress;
	r.arg = &x;
	cli_progress_start(&x.prog, prog && !quiet, 1);
	ret = uq_check(img, flags, &r);
	if (ret == -ENOTSUP) {
		cli_progress_end(&x.prog);
		cli_error("This image format does not support checks");
		uq_close(img);
		return EXIT_NOTSUP;
	}
	if (ret == 0 && (r.corruptions_fixed || r.leaks_fixed)) {
		uint64_t cf = r.corruptions_fixed, lf = r.leaks_fixed;

		if (!json && !quiet) {
			fflush(stderr);
			printf("The following inconsistencies were found and repaired:\n\n"
			       "    %" PRIu64 " leaked clusters\n"
			       "    %" PRIu64 " corruptions\n\n"
			       "Double checking the fixed image now...\n", lf, cf);
			fflush(stdout);
		}
		uint64_t need = r.memory_need;

		ret = uq_check(img, 0, &r);
		r.memory_need = need > r.memory_need ? need : r.memory_need;
		r.corruptions_fixed = cf;
		r.leaks_fixed = lf;
	}
	cli_progress_end(&x.prog);
	if (ret == 0 && !quiet) {
		if (json)
			dump_json(&r, path, memory);
		else
			dump_human(&r, memory);
	}
	/* the problem lines, if any, already say why */
	if (ret < 0 && !x.lines && *uq_errmsg())
		cli_error("%s", uq_errmsg());
	if (ret < 0)
		cli_error("Check failed: %s", strerror(-ret));
	else if (r.check_errors)
		cli_error("Check failed");
	status = ret < 0 || r.check_errors ? CLI_EXIT_FAIL :
		 r.corruptions ? EXIT_CORRUPT : r.leaks ? EXIT_LEAKS : CLI_EXIT_OK;
	ret = uq_close(img);
	if (ret < 0) {
		cli_error_uq(ret, path);
		status = CLI_EXIT_FAIL;
	}
	if (fflush(stdout)) {
		cli_error("writing output: %s", strerror(errno));
		status = CLI_EXIT_FAIL;
	}
	return status;
}

const struct cli_verb cmd_check = {
	.name = "check",
	.summary = "check an image's consistency, repair it (qemu-img check)",
	.run = run,
	.synopsis = "check [-f FMT] [-r leaks|all] [--output=human|json] [--memory] [-p] "
		    "[-q] [-T CACHE] [-U] FILE",
	.help =
	"  -f FMT              image format (only qcow2 can be checked)\n"
	"  -r leaks            free leaked clusters (refcounts above the real\n"
	"                      reference count)\n"
	"  -r all              also raise refcounts that are too low (rebuilding\n"
	"                      the refcount structures when needed), fix COPIED\n"
	"                      flags, and clear the corrupt bit once the image is\n"
	"                      whole\n"
	"  --output=FMT        human (default) or json, with qemu-img's keys\n"
	"  --memory            also print the memory the check needed (human:\n"
	"                      a last line; json: check-memory-need, bytes):\n"
	"                      3 bytes per cluster of the file plus the refcount\n"
	"                      table, the largest L1 table and 16 MiB of\n"
	"                      read-ahead at most, besides the image's caches\n"
	"  -p                  show progress on stderr\n"
	"  -q                  print nothing on stdout\n"
	"  -T CACHE            none (O_DIRECT) or writeback (default)\n"
	"  -U, --force-share   read-only without the image locks that keep out\n"
	"                      writers (qemu-img -U): works while another\n"
	"                      process writes the image, which may change as\n"
	"                      it is read\n"
	"                      (not with -r)\n"
	"\nProblems found are listed on stderr as qemu-img lists them. Exit status:\n"
	"0 no problems, 1 the check could not be completed, 2 corruptions, 3 leaked\n"
	"clusters only (after a repair: what the repaired image still has), 63 not\n"
	"a format that can be checked.\n",
};
