/* SPDX-License-Identifier: MIT */
/* uqcow create: a new qcow2 image (through uq_create) or a sparse raw
 * file, with qemu-img create's options, checks and Formatting line. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "imgopts.h"

#define ZERO_CHUNK (1u << 20)

/* The backing file as the new image will see it: relative names are
 * resolved against the new image's directory. */
static char *backing_path(const char *image, const char *backing)
{
	const char *slash = strrchr(image, '/');
	char *full;

	if (backing[0] == '/' || !slash)
		return strdup(backing);
	if (asprintf(&full, "%.*s/%s", (int)(slash - image), image, backing) < 0)
		return NULL;
	return full;
}

/* qemu-img opens the backing file to check it (and to take its size
 * when none is given), unless -u says not to. Force-share, as qemu-img
 * does: a VM may be writing the backing file; it is only looked at. */
static int check_backing(const char *path, struct imgopts *io,
			 const struct cli_open *defaults, bool need_size)
{
	struct uq_open_opts oo = {
		.struct_size = sizeof(oo),
		.flags = UQ_OPEN_NO_BACKING | UQ_OPEN_FORCE_SHARE,
		.backend = defaults->backend,
	};
	char *full = backing_path(path, io->val[IMGOPT_BACKING_FILE]);
	struct uq_info *in = malloc(sizeof(*in));
	uq_image *b = NULL;
	int ret;

	if (!full || !in) {
		cli_error("out of memory");
		ret = -ENOMEM;
		goto out;
	}
	ret = cli_set_format(&oo.format, io->val[IMGOPT_BACKING_FMT]);
	if (ret < 0)
		goto out;
	ret = uq_open(full, &oo, &b);
	if (ret < 0) {
		const char *msg = uq_errmsg();

		b = NULL;
		cli_error("%s: Could not open backing image: %s", path,
			  *msg ? msg : strerror(-ret));
		goto out;
	}
	in->struct_size = sizeof(*in);
	ret = uq_get_info(b, in);
	if (ret < 0)
		cli_error_uq(ret, full);
	else if (need_size)
		imgopts_set_size(io, in->virtual_size);
out:
	if (b)
		uq_close(b);
	free(in);
	free(full);
	return ret;
}

static int write_zeros(int fd, uint64_t size)
{
	char *z = calloc(1, ZERO_CHUNK);
	uint64_t off = 0;

	if (!z)
		return -ENOMEM;
	while (off < size) {
		size_t n = size - off < ZERO_CHUNK ? (size_t)(size - off) : ZERO_CHUNK;
		ssize_t w = pwrite(fd, z, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			free(z);
			return w < 0 ? -errno : -EIO;
		}
		off += (uint64_t)w;
	}
	free(z);
	return 0;
}

static int create_raw(const char *path, uint64_t size, enum uq_prealloc pre)
{
	uq_image *hold;
	int fd, ret = 0;

	if (pre == UQ_PREALLOC_METADATA) {
		cli_error("%s: Parameter 'preallocation' does not accept value "
			  "'metadata' for raw (off, falloc or full)", path);
		return -EINVAL;
	}
	/* no O_TRUNC: the file may be an image someone uses; the locks say */
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		cli_error("%s: Could not create '%s': %s", path, path, strerror(-ret));
		return ret;
	}
	ret = cli_lock_output(path, &hold);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0)
		ret = -errno;
	else if (pre == UQ_PREALLOC_FALLOC && size)
		ret = -posix_fallocate(fd, 0, (off_t)size);
	else if (pre == UQ_PREALLOC_FULL)
		ret = write_zeros(fd, size);
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	uq_close(hold);   /* after the fd: the written file stays ours to the end */
	if (ret < 0)
		cli_error("%s: Could not resize file or preallocate: %s", path,
			  strerror(-ret));
	return ret;
}

static int create_qcow2(const char *path, const struct imgopts *io,
			const struct cli_open *defaults)
{
	struct uq_create_opts c = { .struct_size = sizeof(c) };
	int ret = imgopts_to_create(io, &c, path);

	if (ret < 0)
		return ret;
	c.backend = defaults->backend;
	ret = uq_create(path, &c);
	if (ret < 0)
		cli_error_uq(ret, path);
	return ret;
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = "qcow2", *backing = NULL, *backing_fmt = NULL, *path;
	struct cli_open o = *defaults;
	struct imgopts io;
	char **optv = calloc((size_t)argc + 1, sizeof(*optv));
	int noptv = 0, c, ret = -EINVAL;
	bool unsafe = false, quiet = false;

	if (!optv) {
		cli_error("out of memory");
		return CLI_EXIT_FAIL;
	}
	imgopts_init(&io, "qcow2");
	while ((c = getopt_long(argc, argv, ":hf:o:b:F:uqU", longopts,
				NULL)) != -1) {
		int r = cli_open_option(&o, c, optarg);

		if (r < 0)
			goto out;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_create, stdout);
			ret = 0;
			goto out;
		case 'f':
			fmt = optarg;
			break;
		case 'o':
			optv[noptv++] = optarg;
			break;
		case 'b':
			backing = optarg;
			break;
		case 'F':
			backing_fmt = optarg;
			break;
		case 'u':
			unsafe = true;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			free(optv);
			return cli_opt_error(&cmd_create, c, argv);
		}
	}
	if (strcmp(fmt, "qcow2") && strcmp(fmt, "raw")) {
		cli_error("Unknown file format '%s' (qcow2 or raw)", fmt);
		goto out;
	}
	io.format = fmt;
	for (int i = 0; i < noptv; i++)
		if (imgopts_parse(&io, optv[i], argc > optind ? argv[optind] : fmt))
			goto out;
	if (io.help) {
		imgopts_help(fmt, "Supported");
		ret = 0;
		goto out;
	}
	if (argc - optind < 1 || argc - optind > 2) {
		free(optv);
		imgopts_free(&io);
		return cli_bad_usage(&cmd_create, "expecting FILE and optionally SIZE");
	}
	path = argv[optind];
	if (argc - optind == 2) {
		uint64_t size;

		if (imgopts_has(&io, IMGOPT_SIZE)) {
			cli_error("%s: The image size must be specified only once", path);
			goto out;
		}
		if (argv[optind + 1][0] == '-' ||
		    cli_parse_size(argv[optind + 1], &size) < 0) {
			cli_error("Invalid image size specified. You may use k, M, G, T, "
				  "P or E suffixes for kilobytes, megabytes, gigabytes, "
				  "terabytes, petabytes and exabytes.");
			goto out;
		}
		imgopts_set_size(&io, size);
	}
	if (!strcmp(fmt, "raw") && (backing || backing_fmt)) {
		cli_error("%s: Backing file not supported for file format 'raw'", path);
		goto out;
	}
	if ((backing && imgopts_set(&io, IMGOPT_BACKING_FILE, backing, path)) ||
	    (backing_fmt && imgopts_set(&io, IMGOPT_BACKING_FMT, backing_fmt, path)))
		goto out;
	if (imgopts_has(&io, IMGOPT_BACKING_FMT) &&
	    !imgopts_has(&io, IMGOPT_BACKING_FILE)) {
		cli_error("%s: Backing format cannot be used without backing file",
			  path);
		goto out;
	}
	if (imgopts_has(&io, IMGOPT_BACKING_FILE)) {
		if (!imgopts_has(&io, IMGOPT_BACKING_FMT)) {
			cli_error("%s: Backing file specified without backing format "
				  "(-F qcow2 or -F raw)", path);
			goto out;
		}
		if (!unsafe &&
		    check_backing(path, &io, &o, !imgopts_has(&io, IMGOPT_SIZE)) < 0)
			goto out;
	}
	if (!imgopts_has(&io, IMGOPT_SIZE)) {
		cli_error("%s: Image creation needs a size parameter", path);
		goto out;
	}
	if (!quiet)
		imgopts_print(&io, path);
	/* qemu-img rounds the size up to whole sectors */
	if (io.num[IMGOPT_SIZE] > UINT64_MAX - 511) {
		cli_error("%s: size %" PRIu64 " is too large", path,
			  io.num[IMGOPT_SIZE]);
		goto out;
	}
	io.num[IMGOPT_SIZE] = (io.num[IMGOPT_SIZE] + 511) & ~(uint64_t)511;
	if (!strcmp(fmt, "raw")) {
		struct uq_create_opts cr = { .struct_size = sizeof(cr) };

		ret = imgopts_to_create(&io, &cr, path);
		if (!ret)
			ret = create_raw(path, cr.size, cr.prealloc);
	} else {
		ret = create_qcow2(path, &io, &o);
	}
out:
	free(optv);
	imgopts_free(&io);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_create = {
	.name = "create",
	.summary = "create a new qcow2 or raw image (qemu-img create)",
	.run = run,
	.synopsis = "create [-f qcow2|raw] [-o OPTIONS] [-b BACKING -F FMT] [-u] "
		    "[-q] FILE [SIZE]",
	.help =
	"  -f FMT         qcow2 (default) or raw (a sparse file)\n"
	"  -o OPTIONS     comma-separated key=value list; -o help lists them:\n"
	"                 cluster_size, refcount_bits (1..64), compat (0.10, 1.1,\n"
	"                 v2, v3), lazy_refcounts, extended_l2, compression_type\n"
	"                 (zlib, zstd), preallocation (off, metadata, falloc,\n"
	"                 full), data_file, data_file_raw, backing_file,\n"
	"                 backing_fmt, size\n"
	"  -b BACKING     backing file, stored as given (relative names are\n"
	"                 relative to FILE's directory); needs -F\n"
	"  -F FMT         backing format: qcow2 or raw\n"
	"  -u             don't open the backing file (SIZE is then required)\n"
	"  -q             quiet: no Formatting line\n"
	"\nSIZE takes k, M, G, T, P, E suffixes and is rounded up to 512 bytes;\n"
	"without it, the backing file's size is used.\n",
};
