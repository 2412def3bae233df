/* SPDX-License-Identifier: MIT */
/* uqcow bitmap: add, remove, clear, enable, disable and merge persistent
 * dirty bitmaps as qemu-img bitmap does: actions run in the order given,
 * on one bitmap of one image. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_ADD = CLI_OPT_FIRST_FREE, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE,
       OPT_MERGE };

#define MAX_ACTIONS 64

struct action {
	int op;
	const char *src;          /* --merge SOURCE */
};

static const char *op_name(int op)
{
	switch (op) {
	case OPT_ADD: return "add";
	case OPT_REMOVE: return "remove";
	case OPT_CLEAR: return "clear";
	case OPT_ENABLE: return "enable";
	case OPT_DISABLE: return "disable";
	default: return "merge";
	}
}

/* The source image of --merge -b FILE: read-only, its bitmaps only. */
static int open_source(const char *file, const char *fmt, const struct cli_open *o,
		       uq_image **out)
{
	struct cli_open so = *o;

	if (fmt && cli_set_format(&so.format, fmt) < 0)
		return -EINVAL;
	return cli_open_image(file, &so, 0, out);
}

static int run_action(uq_image *img, const struct action *a, const char *name,
		      uint32_t gran, bool enable_after_add, uq_image *src)
{
	switch (a->op) {
	case OPT_ADD:
		return uq_bitmap_add(img, name, gran, enable_after_add);
	case OPT_REMOVE:
		return uq_bitmap_remove(img, name);
	case OPT_CLEAR:
		return uq_bitmap_clear(img, name);
	case OPT_ENABLE:
		return uq_bitmap_enable(img, name, 1);
	case OPT_DISABLE:
		return uq_bitmap_enable(img, name, 0);
	default:
		return uq_bitmap_merge(img, name, src, a->src);
	}
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ "add", no_argument, NULL, OPT_ADD },
		{ "remove", no_argument, NULL, OPT_REMOVE },
		{ "clear", no_argument, NULL, OPT_CLEAR },
		{ "enable", no_argument, NULL, OPT_ENABLE },
		{ "disable", no_argument, NULL, OPT_DISABLE },
		{ "merge", required_argument, NULL, OPT_MERGE },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	struct action act[MAX_ACTIONS];
	const char *src_file = NULL, *src_fmt = NULL, *path, *name;
	uint64_t gran = 0;
	bool has_add = false, has_merge = false;
	size_t n = 0;
	uq_image *img = NULL, *src = NULL;
	int c, ret = 0;

	while ((c = getopt_long(argc, argv, ":hf:g:b:F:qU", longopts, NULL)) != -1) {
		int r = cli_image_option(&o, c, optarg, false);

		if (r < 0)
			return CLI_EXIT_FAIL;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_bitmap, stdout);
			return CLI_EXIT_OK;
		case 'g':
			if (cli_parse_size(optarg, &gran) < 0 || !gran || gran > UINT32_MAX ||
			    (gran & (gran - 1))) {
				cli_error("Invalid granularity specified");
				return CLI_EXIT_FAIL;
			}
			break;
		case 'b':
			src_file = optarg;
			break;
		case 'F':
			src_fmt = optarg;
			break;
		case 'q':
			break;
		case OPT_ADD: case OPT_REMOVE: case OPT_CLEAR: case OPT_ENABLE:
		case OPT_DISABLE: case OPT_MERGE:
			if (n == MAX_ACTIONS) {
				cli_error("too many actions (at most %d)", MAX_ACTIONS);
				return CLI_EXIT_FAIL;
			}
			act[n++] = (struct action){ c, c == OPT_MERGE ? optarg : NULL };
			has_add |= c == OPT_ADD;
			has_merge |= c == OPT_MERGE;
			break;
		default:
			return cli_opt_error(&cmd_bitmap, c, argv);
		}
	}
	if (!n) {
		cli_error("Need at least one of --add, --remove, --clear, --enable, "
			  "--disable, or --merge");
		return CLI_EXIT_FAIL;
	}
	if (gran && !has_add) {
		cli_error("granularity only supported with --add");
		return CLI_EXIT_FAIL;
	}
	if (src_fmt && !src_file) {
		cli_error("-F only supported with -b");
		return CLI_EXIT_FAIL;
	}
	if (src_file && !has_merge) {
		cli_error("Merge bitmap source file only supported with --merge");
		return CLI_EXIT_FAIL;
	}
	if (argc - optind != 2)
		return cli_bad_usage(&cmd_bitmap, "Expecting filename and bitmap name");
	path = argv[optind];
	name = argv[optind + 1];
	if (cli_open_image(path, &o, UQ_OPEN_RDWR, &img) < 0)
		return CLI_EXIT_FAIL;
	if (src_file && open_source(src_file, src_fmt, &o, &src) < 0)
		ret = -EINVAL;
	for (size_t i = 0; ret == 0 && i < n; i++) {
		/* --add then --disable is one step on disk: the bitmap is never
		 * enabled in between, as qemu-img adds it */
		bool disable_next = i + 1 < n && act[i + 1].op == OPT_DISABLE;

		ret = run_action(img, &act[i], name, (uint32_t)gran,
				 !(act[i].op == OPT_ADD && disable_next), src);
		if (ret < 0)
			cli_error("Operation %s on bitmap %s failed: %s", op_name(act[i].op),
				  name, uq_errmsg());
		else if (act[i].op == OPT_ADD && disable_next)
			i++;
	}
	uq_close(src);
	c = uq_close(img);
	if (c < 0 && ret == 0) {
		cli_error_uq(c, path);
		ret = c;
	}
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_bitmap = {
	.name = "bitmap",
	.summary = "add, remove, clear, enable, disable or merge persistent bitmaps "
		   "(qemu-img bitmap)",
	.run = run,
	.synopsis = "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | "
		    "--disable)... [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY] "
		    "[-f FMT] FILE BITMAP",
	.help =
	"  --add          add BITMAP, empty and enabled (with -g GRANULARITY)\n"
	"  --remove       remove BITMAP and free its clusters\n"
	"  --clear        clear every bit of BITMAP\n"
	"  --enable       enable BITMAP: writes set its bits\n"
	"  --disable      disable BITMAP: it keeps its bits as they are\n"
	"  --merge SOURCE set in BITMAP every bit set in bitmap SOURCE\n"
	"  -b SOURCE_FILE --merge finds SOURCE in this image (read-only)\n"
	"  -F SOURCE_FMT  its format\n"
	"  -g GRANULARITY bytes per bit, a power of two 512..2G (default: the\n"
	"                 cluster size, at least 4k)\n"
	"  -f FMT         image format: qcow2 (default: probe)\n"
	"\nActions run in the order given. While an image is open for writing,\n"
	"its enabled bitmaps are marked in use; a clean close writes them back.\n"
	"A crash leaves them in use (inconsistent): remove those.\n",
};
