/* SPDX-License-Identifier: MIT */
/* uqcow amend: change a qcow2 image's options in place, as qemu-img
 * amend does: compat, refcount_bits, lazy_refcounts, data_file_raw, size. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imgopts.h"

/* Keys qemu-img only takes at creation, with its wording for them. */
static bool creation_only(enum imgopt_key k)
{
	return k == IMGOPT_CLUSTER_SIZE || k == IMGOPT_EXTENDED_L2 ||
	       k == IMGOPT_PREALLOCATION || k == IMGOPT_COMPRESSION_TYPE;
}

/* Keys qemu-img can amend and uqcow can't (yet), refused before the
 * image is opened for writing. data_file is checked once the image is
 * open: qemu-img's refusal depends on the image. */
static int check_keys(const struct imgopts *io)
{
	for (int k = 0; k < IMGOPT_NKEYS; k++) {
		enum imgopt_key key = (enum imgopt_key)k;

		if (!imgopts_has(io, key) || key == IMGOPT_REFCOUNT_BITS ||
		    key == IMGOPT_COMPAT || key == IMGOPT_LAZY_REFCOUNTS ||
		    key == IMGOPT_DATA_FILE_RAW || key == IMGOPT_SIZE ||
		    key == IMGOPT_DATA_FILE)
			continue;
		if (creation_only(key))
			cli_error("Invalid parameter '%s': this option is only "
				  "supported for image creation", imgopts_key_name(key));
		else
			cli_error("amend: changing '%s' is not supported by uqcow",
				  imgopts_key_name(key));
		return -ENOTSUP;
	}
	return 0;
}

static int parse_compat(const char *val, int *version)
{
	if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
		*version = 2;
	else if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
		*version = 3;
	else {
		cli_error("Unknown compatibility level %s", val);
		return -EINVAL;
	}
	return 0;
}

static int switch_of(const struct imgopts *io, enum imgopt_key k)
{
	bool b = false;

	if (!imgopts_has(io, k))
		return UQ_AMEND_KEEP;
	imgopts_bool(io->val[k], &b);   /* checked when parsed */
	return b ? UQ_AMEND_ON : UQ_AMEND_OFF;
}

static void progress_cb(void *arg, uint64_t done, uint64_t total)
{
	struct cli_progress *p = arg;

	if (!total)
		return;
	/* steps of the engine's own size, drawn as a share of 10000 */
	done = done * 10000 / total;
	if (done > p->done)
		cli_progress_add(p, done - p->done);
}

static int amend(const char *path, const struct imgopts *io,
		 const struct cli_open *o, bool show_progress)
{
	struct uq_amend_opts ao = { .struct_size = sizeof(ao) };
	struct cli_progress prog;
	struct uq_info *in = NULL;
	uq_image *img = NULL;
	int ret;

	if (imgopts_has(io, IMGOPT_COMPAT) &&
	    (ret = parse_compat(io->val[IMGOPT_COMPAT], &ao.version)) < 0)
		return ret;
	ret = cli_open_image(path, o, UQ_OPEN_RDWR, &img);
	if (ret == 0)
		ret = cli_get_info(img, path, &in);
	if (ret < 0)
		goto out;
	if (in->format != UQ_FMT_QCOW2) {
		cli_error("%s: format raw does not support option amendment", path);
		ret = -ENOTSUP;
		goto out;
	}
	if (imgopts_has(io, IMGOPT_DATA_FILE)) {
		if (!in->data_file[0])
			cli_error("data-file can only be set for images that use an "
				  "external data file");
		else
			cli_error("amend: changing 'data_file' is not supported by uqcow");
		ret = -ENOTSUP;
		goto out;
	}
	if (imgopts_has(io, IMGOPT_REFCOUNT_BITS)) {
		uint64_t bits = io->num[IMGOPT_REFCOUNT_BITS];

		if (bits < 1 || bits > 64 || (bits & (bits - 1))) {
			cli_error("Refcount width must be a power of two and may "
				  "not exceed 64 bits");
			ret = -EINVAL;
			goto out;
		}
		ao.refcount_bits = (uint32_t)bits;
	}
	ao.lazy_refcounts = switch_of(io, IMGOPT_LAZY_REFCOUNTS);
	ao.data_file_raw = switch_of(io, IMGOPT_DATA_FILE_RAW);
	cli_progress_start(&prog, show_progress, 10000);
	ao.progress = progress_cb;
	ao.progress_arg = &prog;
	ret = uq_amend(img, &ao);
	/* qemu-img amend changes the size last, through the same open */
	if (ret == 0 && imgopts_has(io, IMGOPT_SIZE))
		ret = uq_resize(img, io->num[IMGOPT_SIZE]);
	if (ret == 0)
		cli_progress_end(&prog);
	else if (show_progress)
		fputc('\n', stderr);
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
	free(in);
	return ret;
}

static void amend_help(void)
{
	static const char *const lines[][2] = {
		{ "compat=<str>", "Compatibility level (v2 [0.10] or v3 [1.1])" },
		{ "data_file_raw=<bool (on/off)>", "The external data file must stay "
		  "valid as a raw image (can only be turned off)" },
		{ "lazy_refcounts=<bool (on/off)>", "Postpone refcount updates" },
		{ "refcount_bits=<num>", "Width of a reference count entry in bits" },
		{ "size=<size>", "Virtual disk size" },
	};

	printf("Amend options for 'qcow2':\n");
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		printf("  %-22s - %s\n", lines[i][0], lines[i][1]);
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	struct imgopts io;
	bool show_progress = false;
	const char *path;
	char **optv = calloc((size_t)argc + 1, sizeof(*optv));
	int noptv = 0, c, ret = -EINVAL;

	if (!optv) {
		cli_error("out of memory");
		return CLI_EXIT_FAIL;
	}
	imgopts_init(&io, "qcow2");
	while ((c = getopt_long(argc, argv, ":hf:o:pqt:U", longopts,
				NULL)) != -1) {
		int r = cli_image_option(&o, c, optarg, false);

		if (r < 0)
			goto out;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_amend, stdout);
			ret = 0;
			goto out;
		case 'o':
			optv[noptv++] = optarg;
			break;
		case 'p':
			show_progress = true;
			break;
		case 'q':
			show_progress = false;
			break;
		default:
			free(optv);
			return cli_opt_error(&cmd_amend, c, argv);
		}
	}
	path = argc - optind == 1 ? argv[optind] : "amend";
	for (int i = 0; i < noptv; i++)
		if (imgopts_parse(&io, optv[i], path))
			goto out;
	if (io.help) {
		amend_help();
		ret = 0;
		goto out;
	}
	if (!noptv) {
		cli_error("Must specify options (-o)");
		goto out;
	}
	if (argc - optind != 1) {
		free(optv);
		imgopts_free(&io);
		return cli_bad_usage(&cmd_amend, "expecting one image file name");
	}
	ret = check_keys(&io);
	if (!ret)
		ret = amend(path, &io, &o, show_progress);
out:
	free(optv);
	imgopts_free(&io);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_amend = {
	.name = "amend",
	.summary = "change a qcow2 image's options in place (qemu-img amend)",
	.run = run,
	.synopsis = "amend [-f qcow2] [-t CACHE] [-p] [-q] -o OPTIONS FILE",
	.help =
	"  -f FMT         image format (qcow2; default: probe)\n"
	"  -o OPTIONS     compat=0.10|1.1 (also v2|v3), refcount_bits=N (1, 2,\n"
	"                 4, 8, 16, 32 or 64), lazy_refcounts=on|off,\n"
	"                 data_file_raw=off, size=SIZE; -o help lists them\n"
	"  -t MODE        cache mode; none opens with O_DIRECT\n"
	"  -p             show progress (compat=0.10 rewrites every L2 table)\n"
	"  -q             quiet\n"
	"\ncompat=0.10 needs 16-bit refcounts, no external data file, no\n"
	"extended L2 entries and no zstd-compressed clusters; zero clusters\n"
	"(in snapshots too) become zeroed data or holes. Changes run in\n"
	"qemu-img's order (upgrade, refcount width, data_file_raw, lazy\n"
	"refcounts, downgrade, size); each writes new structures first and\n"
	"switches the header last, so a crash leaves the old image or the new\n"
	"one (at worst with leaked clusters).\n",
};
