/* SPDX-License-Identifier: MIT */
/* uqcow resize: change an image's virtual size, as qemu-img resize does:
 * absolute or +/- relative sizes, and shrinking only with --shrink. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_SHRINK = CLI_OPT_FIRST_FREE, OPT_PREALLOC };

/* "[+|-]SIZE" against the current size; -EINVAL after an error line. */
static int new_size(const char *arg, uint64_t cur, uint64_t *out)
{
	int sign = 0;
	uint64_t v;

	if (*arg == '+' || *arg == '-')
		sign = *arg++ == '+' ? 1 : -1;
	if (cli_parse_size(arg, &v) < 0) {
		cli_error("Parameter 'size' expects a non-negative number below 2^64 "
			  "(optional suffix k, M, G, T, P or E)");
		return -EINVAL;
	}
	if (sign < 0 && v >= cur) {
		cli_error("New image size must be positive");
		return -EINVAL;
	}
	if (sign > 0 && v > UINT64_MAX - cur) {
		cli_error("Image size too large");
		return -EINVAL;
	}
	*out = sign > 0 ? cur + v : sign < 0 ? cur - v : v;
	if (!sign && !*out) {
		cli_error("New image size must be positive");
		return -EINVAL;
	}
	return 0;
}

static int resize(const char *path, const char *arg, const struct cli_open *o,
		  bool shrink, bool quiet)
{
	struct uq_info *in = NULL;
	uq_image *img = NULL;
	uint64_t size;
	int ret;

	ret = cli_open_image(path, o, UQ_OPEN_RDWR, &img);
	if (ret == 0)
		ret = cli_get_info(img, path, &in);
	if (ret < 0)
		goto out;
	ret = new_size(arg, in->virtual_size, &size);
	if (ret < 0)
		goto out;
	if (size < in->virtual_size && !shrink) {
		cli_error("Use the --shrink option to perform a shrink operation.");
		ret = -EINVAL;
		goto out;
	}
	if (in->format == UQ_FMT_QCOW2 && size % 512) {
		cli_error("%s: The new size must be a multiple of 512", path);
		ret = -EINVAL;
		goto out;
	}
	ret = uq_resize(img, size);
	if (ret < 0)
		cli_error_uq(ret, path);
out:
	if (img) {
		int r = uq_close(img);

		if (r < 0 && !ret) {
			cli_error_uq(r, path);
			ret = r;
		}
	}
	if (!ret && !quiet)
		printf("Image resized.\n");
	free(in);
	return ret;
}

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return true;
	return false;
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ "shrink", no_argument, NULL, OPT_SHRINK },
		{ "preallocation", required_argument, NULL, OPT_PREALLOC },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	bool shrink = false, quiet = false;
	const char *size;
	int c;

	if (wants_help(argc, argv)) {
		cli_usage(&cmd_resize, stdout);
		return CLI_EXIT_OK;
	}
	/* Like qemu-img: take SIZE off the end first, so that getopt doesn't
	 * read "-1G" as options. */
	if (argc < 3)
		return cli_bad_usage(&cmd_resize, "expecting FILE and SIZE");
	size = argv[--argc];
	while ((c = getopt_long(argc, argv, ":hf:qt:U", longopts,
				NULL)) != -1) {
		int r = cli_image_option(&o, c, optarg, true);

		if (r < 0)
			return CLI_EXIT_FAIL;
		if (r > 0)
			continue;
		switch (c) {
		case 'q':
			quiet = true;
			break;
		case OPT_SHRINK:
			shrink = true;
			break;
		case OPT_PREALLOC:
			if (strcmp(optarg, "off")) {
				cli_error("--preallocation=%s is not supported (only off)",
					  optarg);
				return CLI_EXIT_FAIL;
			}
			break;
		default:
			return cli_opt_error(&cmd_resize, c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_bad_usage(&cmd_resize, "expecting FILE and SIZE");
	return resize(argv[optind], size, &o, shrink, quiet) < 0 ?
	       CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_resize = {
	.name = "resize",
	.summary = "change an image's virtual size (qemu-img resize)",
	.run = run,
	.synopsis = "resize [-f FMT] [--shrink] [-q] FILE [+|-]SIZE",
	.help =
	"  -f FMT         qcow2 or raw (default: probe)\n"
	"  --shrink       allow making the image smaller; a qcow2 image is only\n"
	"                 shrunk when nothing past the new end is allocated\n"
	"  -q             quiet: no \"Image resized.\" line\n"
	"  -t MODE        cache mode; none opens with O_DIRECT\n"
	"\nSIZE is absolute, or relative with + or - (qcow2: a multiple of 512).\n"
	"SIZE takes k, M, G, T, P, E suffixes.\n",
};
