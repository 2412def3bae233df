/* SPDX-License-Identifier: MIT */
/* uqcow amend: change a qcow2 image's options in place, as qemu-img
 * amend does. The refcount width is what uqcow can change. */
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

/* Everything but refcount_bits (and compat left as it is) is refused
 * before the image is opened for writing. */
static int check_keys(const struct imgopts *io)
{
	for (int k = 0; k < IMGOPT_NKEYS; k++) {
		if (!imgopts_has(io, (enum imgopt_key)k) ||
		    k == IMGOPT_REFCOUNT_BITS || k == IMGOPT_COMPAT)
			continue;
		if (creation_only((enum imgopt_key)k))
			cli_error("Invalid parameter '%s': this option is only "
				  "supported for image creation", imgopts_key_name((enum imgopt_key)k));
		else
			cli_error("amend: changing '%s' is not supported (uqcow "
				  "amends refcount_bits only)", imgopts_key_name((enum imgopt_key)k));
		return -ENOTSUP;
	}
	return 0;
}

static int check_compat(const char *path, const char *val, uint32_t version)
{
	uint32_t want;

	if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
		want = 2;
	else if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
		want = 3;
	else {
		cli_error("%s: Parameter 'compat' does not accept value '%s' (0.10, "
			  "1.1, v2 or v3)", path, val);
		return -EINVAL;
	}
	if (want != version) {
		cli_error("%s: amend: changing compat from %s to %s is not supported",
			  path, version == 2 ? "0.10" : "1.1", want == 2 ? "0.10" : "1.1");
		return -ENOTSUP;
	}
	return 0;
}

static int amend(const char *path, const struct imgopts *io,
		 const struct cli_open *o)
{
	struct uq_info *in = NULL;
	uq_image *img = NULL;
	int ret;

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
	if (imgopts_has(io, IMGOPT_COMPAT) &&
	    (ret = check_compat(path, io->val[IMGOPT_COMPAT], in->version)) < 0)
		goto out;
	if (imgopts_has(io, IMGOPT_REFCOUNT_BITS) &&
	    io->num[IMGOPT_REFCOUNT_BITS] != in->refcount_bits) {
		uint64_t bits = io->num[IMGOPT_REFCOUNT_BITS];

		if (bits < 1 || bits > 64 || (bits & (bits - 1))) {
			cli_error("%s: Refcount width must be a power of two and may "
				  "not exceed 64 bits", path);
			ret = -EINVAL;
			goto out;
		}
		ret = uq_amend_refcount_bits(img, (uint32_t)bits);
		if (ret < 0) {
			cli_error_uq(ret, path);
			goto out;
		}
	}
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
	printf("Amend options for 'qcow2':\n"
	       "  %-22s - %s\n  %-22s - %s\n",
	       "compat=<str>", "Compatibility level (v2 [0.10] or v3 [1.1]); "
	       "only the current one", "refcount_bits=<num>",
	       "Width of a reference count entry in bits");
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	struct imgopts io;
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
		case 'q':
			break;   /* the rewrite is quick; no progress to show */
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
		ret = amend(path, &io, &o);
out:
	free(optv);
	imgopts_free(&io);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_amend = {
	.name = "amend",
	.summary = "change a qcow2 image's refcount width (qemu-img amend)",
	.run = run,
	.synopsis = "amend [-f qcow2] [-t CACHE] -o refcount_bits=N[,compat=V] "
		    "FILE",
	.help =
	"  -f FMT         image format (qcow2; default: probe)\n"
	"  -o OPTIONS     refcount_bits=N (1, 2, 4, 8, 16, 32 or 64); compat is\n"
	"                 accepted when it names the image's current level\n"
	"  -t MODE        cache mode; none opens with O_DIRECT\n"
	"  -p, -q         accepted for qemu-img compatibility\n"
	"\nThe new refcount structures are written first and the header\n"
	"switched last, so a crash leaves either width, never a mix.\n",
};
