/* SPDX-License-Identifier: MIT */
/* uqcow map: the allocation map of an image as qemu-img map prints it,
 * extents merged the same way, in human or JSON-lines form. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_START = CLI_OPT_FIRST_FREE, OPT_MAX_LENGTH };

/* Chain images can be deep but qemu's own limit is far below this. */
#define MAX_CHAIN 4096

struct entry {
	struct uq_extent e;
	const char *file;   /* file holding the data at offset (human format) */
};

struct chain {
	char **names;       /* per depth: the file data offsets point into */
	size_t n;
};

/* The file an image's host offsets refer to: the image itself, or its
 * external data file resolved against the image's directory. */
static char *data_path(const struct uq_info *in)
{
	const char *slash = strrchr(in->filename, '/');
	size_t dir = slash ? (size_t)(slash - in->filename) + 1 : 0;
	char *p;

	if (!in->data_file[0])
		return strdup(in->filename);
	if (in->data_file[0] == '/')
		dir = 0;
	p = malloc(dir + strlen(in->data_file) + 1);
	if (p) {
		memcpy(p, in->filename, dir);
		strcpy(p + dir, in->data_file);
	}
	return p;
}

static int chain_load(uq_image *img, struct chain *c)
{
	struct uq_info *in = malloc(sizeof(*in));
	int ret = 0;

	c->names = NULL;
	c->n = 0;
	if (!in)
		return -ENOMEM;
	for (; img && c->n < MAX_CHAIN; img = uq_backing(img)) {
		char **grown = realloc(c->names, (c->n + 1) * sizeof(*grown));

		if (!grown) {
			ret = -ENOMEM;
			break;
		}
		c->names = grown;
		in->struct_size = sizeof(*in);
		ret = uq_get_info(img, in);
		if (ret < 0)
			break;
		c->names[c->n] = data_path(in);
		if (!c->names[c->n]) {
			ret = -ENOMEM;
			break;
		}
		c->n++;
	}
	free(in);
	return ret;
}

static void chain_free(struct chain *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->names[i]);
	free(c->names);
}

/* qemu-img's entry_mergeable(): same status, same file, and for mapped
 * extents a host offset that continues the previous one. */
static bool mergeable(const struct entry *a, const struct entry *b)
{
	if (a->e.length == 0)
		return false;
	if (a->e.zero != b->e.zero || a->e.data != b->e.data ||
	    a->e.compressed != b->e.compressed || a->e.depth != b->e.depth ||
	    a->e.present != b->e.present || a->e.has_offset != b->e.has_offset ||
	    !a->file != !b->file)
		return false;
	if (a->file && strcmp(a->file, b->file))
		return false;
	if (a->e.has_offset && a->e.offset + a->e.length != b->e.offset)
		return false;
	return true;
}

static void dump_json(const struct entry *c, bool more)
{
	const struct uq_extent *e = &c->e;

	printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d,"
	       " \"present\": %s, \"zero\": %s, \"data\": %s", e->start,
	       e->length, e->depth, e->present ? "true" : "false",
	       e->zero ? "true" : "false", e->data ? "true" : "false");
	if (e->compressed)
		printf(", \"compressed\": true");
	if (e->has_offset)
		printf(", \"offset\": %" PRIu64, e->offset);
	putchar('}');
	if (more)
		puts(",");
}

/* Human format lists data extents only; like qemu-img it folds zero and
 * unallocated extents together (by editing next) so they coalesce. */
static int dump_human(const struct entry *c, struct entry *next)
{
	const struct uq_extent *e = &c->e;

	if (e->data && !e->has_offset) {
		cli_error("File contains external, encrypted or compressed clusters.");
		return -ENOTSUP;
	}
	if (e->data && !e->zero)
		printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n",
		       e->start, e->length, e->has_offset ? e->offset : 0,
		       c->file ? c->file : "");
	if (next && (!next->e.data || next->e.zero)) {
		next->e.data = 0;
		next->e.zero = 1;
	}
	return 0;
}

static int map_image(uq_image *img, const char *path, uint64_t start,
		     uint64_t end, bool json)
{
	struct chain ch;
	struct entry curr = { 0 }, next;
	uint64_t off = start;
	int ret;

	ret = chain_load(img, &ch);
	if (ret < 0) {
		cli_error_uq(ret, path);
		chain_free(&ch);
		return ret;
	}
	if (json)
		putchar('[');
	else
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	while (off < end) {
		/* Ask in 1 GiB steps as qemu-img does; merging hides them. */
		uint64_t len = end - off < (1ull << 30) ? end - off : 1ull << 30;

		memset(&next, 0, sizeof(next));
		next.e.struct_size = sizeof(next.e);
		ret = uq_block_status(img, off, len, &next.e);
		if (ret < 0) {
			cli_error_uq(ret, path);
			goto out;
		}
		if (next.e.length == 0 || next.e.length > len ||
		    next.e.depth < 0) {
			cli_error("%s: block status at offset %" PRIu64
				  " returned a bad extent", path, off);
			ret = -EIO;
			goto out;
		}
		next.e.start = off;
		next.file = (size_t)next.e.depth < ch.n ? ch.names[next.e.depth]
							: NULL;
		off += next.e.length;
		if (curr.e.length && mergeable(&curr, &next)) {
			curr.e.length += next.e.length;
			continue;
		}
		if (curr.e.length) {
			if (json)
				dump_json(&curr, true);
			else if ((ret = dump_human(&curr, &next)) < 0)
				goto out;
		}
		curr = next;
	}
	if (curr.e.length) {
		if (json)
			dump_json(&curr, false);
		else
			ret = dump_human(&curr, NULL);
	}
	if (json)
		puts("]");
out:
	chain_free(&ch);
	return ret;
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ "output", required_argument, NULL, CLI_OPT_OUTPUT },
		{ "start-offset", required_argument, NULL, OPT_START },
		{ "max-length", required_argument, NULL, OPT_MAX_LENGTH },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	uint64_t start = 0, max_len = UINT64_MAX, end;
	bool json = false;
	uq_image *img = NULL;
	const char *snapshot = NULL;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":hf:o:t:l:U", longopts, NULL)) != -1) {
		int r = cli_image_option(&o, c, optarg, true);

		if (r < 0)
			return CLI_EXIT_FAIL;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_map, stdout);
			return CLI_EXIT_OK;
		case 'l':
			snapshot = optarg;
			break;
		case CLI_OPT_OUTPUT:
			if (cli_set_output(&json, optarg))
				return CLI_EXIT_FAIL;
			break;
		case OPT_START:
			if (cli_parse_size(optarg, &start)) {
				cli_error("invalid start offset '%s'", optarg);
				return CLI_EXIT_FAIL;
			}
			break;
		case OPT_MAX_LENGTH:
			if (cli_parse_size(optarg, &max_len)) {
				cli_error("invalid max length '%s'", optarg);
				return CLI_EXIT_FAIL;
			}
			break;
		default:
			return cli_opt_error(&cmd_map, c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_bad_usage(&cmd_map, "expecting one image file name");
	if (cli_open_image(argv[optind], &o, 0, &img) < 0)
		return CLI_EXIT_FAIL;
	if (snapshot && cli_snapshot_select(img, snapshot) < 0) {
		ret = -ENOENT;
		goto out;
	}
	ret = cli_image_size(img, argv[optind], &end);
	if (ret < 0)
		goto out;
	if (start > end)
		start = end;
	if (max_len < end - start)
		end = start + max_len;
	ret = map_image(img, argv[optind], start, end, json);
out:
	if (img)
		uq_close(img);
	if (fflush(stdout) && !ret) {
		cli_error("writing output: %s", strerror(errno));
		ret = -EIO;
	}
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_map = {
	.name = "map",
	.summary = "print the allocation map (qemu-img map)",
	.run = run,
	.synopsis = "map [-f FMT] [--output=human|json] [--start-offset=OFF] "
		    "[--max-length=LEN] [-l SNAPSHOT] [-U] FILE",
	.help =
	"  -f FMT              image format: qcow2 or raw (default: probe)\n"
	"  --output=FMT        human (default: data extents and the file\n"
	"                      holding them) or json (one extent per line)\n"
	"  --start-offset=OFF  first guest offset to map\n"
	"  --max-length=LEN    map at most LEN bytes\n"
	"  -l SNAPSHOT         map an internal snapshot instead of the active\n"
	"                      state: a name or ID (an ID match wins), or\n"
	"                      snapshot.id=ID[,snapshot.name=NAME] as in convert\n"
	"  -U, --force-share   read-only without the image locks that keep out\n"
	"                      writers (qemu-img -U): works while another\n"
	"                      process writes the image, which may change as\n"
	"                      it is read\n"
	"  -o l2-cache-size=SIZE, --l2-cache-size=SIZE\n"
	"                      L2 table cache size\n"
	"  -t MODE, --cache=MODE\n"
	"                      none opens with O_DIRECT; writeback (default)\n"
	"  --io=io_uring|psync I/O backend\n",
};
