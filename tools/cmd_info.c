/* SPDX-License-Identifier: MIT */
/* uqcow info: what qemu-img info prints, with the same keys and layout in
 * both human and JSON form, plus the I/O backend that ran. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)

enum { OPT_BACKING_CHAIN = CLI_OPT_FIRST_FREE };

/* One key of format-specific data; the array order is the order qemu-img
 * 7.2 prints them in, shared by the human and JSON printers. */
struct field {
	const char *key;
	enum { F_STR, F_U64, F_BOOL, F_BITMAPS } kind;
	const char *s;
	uint64_t u;
};

#define MAX_FIELDS 9

static size_t qcow2_fields(const struct uq_info *in, struct field *f)
{
	size_t n = 0;
	bool v3 = in->version >= 3;

	f[n++] = (struct field){ "compat", F_STR, v3 ? "1.1" : "0.10", 0 };
	f[n++] = (struct field){ "compression-type", F_STR,
				 in->compression_type == 1 ? "zstd" : "zlib", 0 };
	if (v3)
		f[n++] = (struct field){ "lazy-refcounts", F_BOOL, NULL,
					 !!in->lazy_refcounts };
	if (in->nb_bitmaps)
		f[n++] = (struct field){ "bitmaps", F_BITMAPS, NULL, in->nb_bitmaps };
	f[n++] = (struct field){ "refcount-bits", F_U64, NULL, in->refcount_bits };
	if (in->data_file[0])
		f[n++] = (struct field){ "data-file", F_STR, in->data_file, 0 };
	if (in->incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
		f[n++] = (struct field){ "data-file-raw", F_BOOL, NULL,
					 !!in->data_file_raw };
	if (v3) {
		f[n++] = (struct field){ "corrupt", F_BOOL, NULL, !!in->corrupt };
		f[n++] = (struct field){ "extended-l2", F_BOOL, NULL,
					 !!in->extended_l2 };
	}
	return n;
}

/* Flag names in qemu's order (in-use, then auto). */
static const char *const bitmap_flag[] = { "in-use", "auto" };

static int get_bitmap(uq_image *img, const struct uq_info *in, uint32_t i,
		      struct uq_bitmap_info *b)
{
	int ret;

	b->struct_size = sizeof(*b);
	ret = uq_bitmap_get(img, i, b);
	if (ret < 0)
		cli_error_uq(ret, in->filename);
	return ret;
}

static int human_bitmaps(uq_image *img, const struct uq_info *in)
{
	struct uq_bitmap_info b;

	printf("    bitmaps:\n");
	for (uint32_t i = 0; i < in->nb_bitmaps; i++) {
		unsigned k = 0;

		if (get_bitmap(img, in, i, &b) < 0)
			return -EIO;
		printf("        [%u]:\n            flags:\n", i);
		for (unsigned bit = 0; bit < 2; bit++)
			if (b.flags & (1u << bit))
				printf("                [%u]: %s\n", k++, bitmap_flag[bit]);
		printf("            name: %s\n            granularity: %u\n", b.name,
		       b.granularity);
	}
	return 0;
}

static int json_bitmaps(struct cli_json *j, uq_image *img, const struct uq_info *in)
{
	struct uq_bitmap_info b;

	cli_json_begin(j, "bitmaps", '[');
	for (uint32_t i = 0; i < in->nb_bitmaps; i++) {
		if (get_bitmap(img, in, i, &b) < 0)
			return -EIO;
		cli_json_begin(j, NULL, '{');
		cli_json_begin(j, "flags", '[');
		for (unsigned bit = 0; bit < 2; bit++)
			if (b.flags & (1u << bit))
				cli_json_str(j, NULL, bitmap_flag[bit]);
		if (!b.flags)
			j->fresh = false;   /* qemu prints an empty list on two lines */
		cli_json_end(j, ']');
		cli_json_str(j, "name", b.name);
		cli_json_u64(j, "granularity", b.granularity);
		cli_json_end(j, '}');
	}
	cli_json_end(j, ']');
	return 0;
}

static const char *format_name(enum uq_format f)
{
	return f == UQ_FMT_QCOW2 ? "qcow2" : "raw";
}

static const char *backend_name(const struct uq_info *in)
{
	return in->backend ? in->backend : "unknown";
}

/* ---- human ---- */

/* One row of qemu-img's snapshot table (bdrv_snapshot_dump). */
static void snapshot_row(const struct uq_snapshot_info *s)
{
	char date[64] = "", clock[64], size[32], icount[32] = "";
	time_t t = (time_t)s->date_sec;
	struct tm tm;
	uint64_t secs = s->vm_clock_nsec / 1000000000ull;

	if (localtime_r(&t, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d",
		 (int)(secs / 3600), (int)((secs / 60) % 60), (int)(secs % 60),
		 (int)((s->vm_clock_nsec / 1000000) % 1000));
	cli_size_str(s->vm_state_size, size, sizeof(size));
	if (s->icount != UINT64_MAX)
		snprintf(icount, sizeof(icount), "%" PRIu64, s->icount);
	printf("%-9s %-16s %8s%20s%13s%11s\n", s->id, s->name, size, date, clock,
	       icount);
}

static int print_human(uq_image *img, const struct uq_info *in)
{
	char vsize[32], dsize[32];
	struct field f[MAX_FIELDS];
	size_t n;

	cli_size_str(in->virtual_size, vsize, sizeof(vsize));
	cli_size_str(in->actual_size, dsize, sizeof(dsize));
	printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64
	       " bytes)\ndisk size: %s\n", in->filename, format_name(in->format),
	       vsize, in->virtual_size, dsize);
	if (in->cluster_size)
		printf("cluster_size: %u\n", in->cluster_size);
	printf("io backend: %s\n", backend_name(in));
	if (in->dirty)
		printf("cleanly shut down: no\n");
	if (in->backing_file[0]) {
		printf("backing file: %s", in->backing_file);
		if (!in->backing_full[0])
			printf(" (cannot determine actual path)");
		else if (strcmp(in->backing_file, in->backing_full))
			printf(" (actual path: %s)", in->backing_full);
		printf("\n");
		if (in->backing_format[0])
			printf("backing file format: %s\n", in->backing_format);
	}
	if (in->nb_snapshots) {
		printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG",
		       "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
		for (uint32_t i = 0; i < in->nb_snapshots; i++) {
			struct uq_snapshot_info s = { .struct_size = sizeof(s) };
			int ret = uq_snapshot_get(img, i, &s);

			if (ret < 0) {
				cli_error_uq(ret, in->filename);
				return ret;
			}
			snapshot_row(&s);
		}
	}
	if (in->format != UQ_FMT_QCOW2)
		return 0;
	if (in->bitmaps_problem[0])
		fprintf(stderr, "uqcow: warning: %s: bitmaps can't be read (%s); "
			"listed without them\n", in->filename, in->bitmaps_problem);
	printf("Format specific information:\n");
	n = qcow2_fields(in, f);
	for (size_t i = 0; i < n; i++) {
		if (f[i].kind == F_BITMAPS) {
			if (human_bitmaps(img, in) < 0)
				return -EIO;
			continue;
		}
		/* qemu turns the JSON key into words: "lazy refcounts". */
		printf("    ");
		for (const char *k = f[i].key; *k; k++)
			putchar(*k == '-' ? ' ' : *k);
		if (f[i].kind == F_STR)
			printf(": %s\n", f[i].s);
		else if (f[i].kind == F_BOOL)
			printf(": %s\n", f[i].u ? "true" : "false");
		else
			printf(": %" PRIu64 "\n", f[i].u);
	}
	return 0;
}

/* ---- JSON ---- */

static int json_snapshots(struct cli_json *j, uq_image *img,
			  const struct uq_info *in)
{
	cli_json_begin(j, "snapshots", '[');
	for (uint32_t i = 0; i < in->nb_snapshots; i++) {
		struct uq_snapshot_info s = { .struct_size = sizeof(s) };
		int ret = uq_snapshot_get(img, i, &s);

		if (ret < 0) {
			cli_error_uq(ret, in->filename);
			return ret;
		}
		cli_json_begin(j, NULL, '{');
		if (s.icount != UINT64_MAX)
			cli_json_u64(j, "icount", s.icount);
		cli_json_u64(j, "vm-clock-nsec", s.vm_clock_nsec % 1000000000ull);
		cli_json_str(j, "name", s.name);
		cli_json_u64(j, "date-sec", s.date_sec);
		cli_json_u64(j, "date-nsec", s.date_nsec);
		cli_json_u64(j, "vm-clock-sec", s.vm_clock_nsec / 1000000000ull);
		cli_json_str(j, "id", s.id);
		cli_json_u64(j, "vm-state-size", s.vm_state_size);
		cli_json_end(j, '}');
	}
	cli_json_end(j, ']');
	return 0;
}

/* Key order as qemu-img 7.2 prints it, so output diffs cleanly. */
static int print_json(struct cli_json *j, uq_image *img,
		      const struct uq_info *in)
{
	struct field f[MAX_FIELDS];
	size_t n;
	int ret;

	cli_json_begin(j, NULL, '{');
	if (in->backing_file[0] && in->backing_format[0])
		cli_json_str(j, "backing-filename-format", in->backing_format);
	if (in->nb_snapshots) {
		ret = json_snapshots(j, img, in);
		if (ret < 0)
			return ret;
	}
	cli_json_u64(j, "virtual-size", in->virtual_size);
	cli_json_str(j, "filename", in->filename);
	if (in->cluster_size)
		cli_json_u64(j, "cluster-size", in->cluster_size);
	cli_json_str(j, "format", format_name(in->format));
	cli_json_u64(j, "actual-size", in->actual_size);
	if (in->format == UQ_FMT_QCOW2) {
		cli_json_begin(j, "format-specific", '{');
		cli_json_str(j, "type", "qcow2");
		cli_json_begin(j, "data", '{');
		n = qcow2_fields(in, f);
		for (size_t i = 0; i < n; i++) {
			if (f[i].kind == F_BITMAPS) {
				ret = json_bitmaps(j, img, in);
				if (ret < 0)
					return ret;
			} else if (f[i].kind == F_STR)
				cli_json_str(j, f[i].key, f[i].s);
			else if (f[i].kind == F_BOOL)
				cli_json_bool(j, f[i].key, f[i].u);
			else
				cli_json_u64(j, f[i].key, f[i].u);
		}
		cli_json_end(j, '}');
		cli_json_end(j, '}');
	}
	if (in->backing_file[0]) {
		if (in->backing_full[0])
			cli_json_str(j, "full-backing-filename", in->backing_full);
		cli_json_str(j, "backing-filename", in->backing_file);
	}
	cli_json_bool(j, "dirty-flag", in->dirty);
	cli_json_str(j, "io-backend", backend_name(in));
	cli_json_end(j, '}');
	return 0;
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ "output", required_argument, NULL, CLI_OPT_OUTPUT },
		{ "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	bool json = false, chain = false;
	struct uq_info *in = NULL;
	struct cli_json j;
	uq_image *img = NULL, *cur;
	int c, ret = 0;

	while ((c = getopt_long(argc, argv, ":hf:o:t:U", longopts, NULL)) != -1) {
		int r = cli_image_option(&o, c, optarg, true);

		if (r < 0)
			return CLI_EXIT_FAIL;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_info, stdout);
			return CLI_EXIT_OK;
		case CLI_OPT_OUTPUT:
			if (cli_set_output(&json, optarg))
				return CLI_EXIT_FAIL;
			break;
		case OPT_BACKING_CHAIN:
			chain = true;
			break;
		default:
			return cli_opt_error(&cmd_info, c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_bad_usage(&cmd_info, "expecting one image file name");

	/* Like qemu-img: without --backing-chain a missing backing file
	 * doesn't stop info from describing the image itself. */
	if (cli_open_image(argv[optind], &o, chain ? 0 : UQ_OPEN_NO_BACKING,
			   &img) < 0)
		return CLI_EXIT_FAIL;
	in = malloc(sizeof(*in));
	if (!in) {
		cli_error("out of memory");
		ret = -ENOMEM;
		goto out;
	}
	cli_json_init(&j, stdout);
	if (json && chain)
		cli_json_begin(&j, NULL, '[');
	for (cur = img; cur; cur = chain ? uq_backing(cur) : NULL) {
		in->struct_size = sizeof(*in);
		ret = uq_get_info(cur, in);
		if (ret < 0) {
			cli_error_uq(ret, argv[optind]);
			goto out;
		}
		if (json)
			ret = print_json(&j, cur, in);
		else {
			if (cur != img)
				printf("\n");
			ret = print_human(cur, in);
		}
		if (ret < 0)
			goto out;
	}
	if (json && chain)
		cli_json_end(&j, ']');
	if (json)
		printf("\n");
out:
	free(in);
	if (img)
		uq_close(img);
	if (fflush(stdout) && !ret) {
		cli_error("writing output: %s", strerror(errno));
		ret = -EIO;
	}
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_info = {
	.name = "info",
	.summary = "describe an image (qemu-img info)",
	.run = run,
	.synopsis = "info [-f FMT] [--output=human|json] [--backing-chain] [-U] "
		    "[-t CACHE] [-o l2-cache-size=SIZE] FILE",
	.help =
	"  -f FMT              image format: qcow2 or raw (default: probe)\n"
	"  --output=FMT        human (default) or json, with qemu-img's keys\n"
	"  --backing-chain     describe every image of the backing chain\n"
	"  -U, --force-share   read-only without the image locks that keep out\n"
	"                      writers (qemu-img -U): works while another\n"
	"                      process writes the image, which may change as\n"
	"                      it is read\n"
	"  -o l2-cache-size=SIZE, --l2-cache-size=SIZE\n"
	"                      L2 table cache size\n"
	"  -t MODE, --cache=MODE\n"
	"                      none opens with O_DIRECT; writeback (default)\n"
	"  --io=io_uring|psync I/O backend; info reports the one that ran\n"

};
