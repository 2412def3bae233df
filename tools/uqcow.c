/* SPDX-License-Identifier: MIT */
/* The uqcow command: global options, the verb table and dispatch. Each
 * verb lives in its own cmd_*.c; adding one is a file and a table entry. */
#include <errno.h>
#include <string.h>

#include "cli.h"

#ifndef UQCOW_VERSION
#define UQCOW_VERSION "unknown"
#endif

static const struct cli_verb *const verbs[] = {
	&cmd_create,
	&cmd_info,
	&cmd_check,
	&cmd_map,
	&cmd_convert,
	&cmd_compare,
	&cmd_io,
	&cmd_bench,
	&cmd_snapshot,
	&cmd_amend,
	&cmd_resize,
	&cmd_bitmap,
};

#define NVERBS (sizeof(verbs) / sizeof(verbs[0]))

static const struct cli_verb *find_verb(const char *name)
{
	for (size_t i = 0; i < NVERBS; i++)
		if (!strcmp(verbs[i]->name, name))
			return verbs[i];
	return NULL;
}

static int usage_error(void)
{
	fputs("Try 'uqcow --help' for more information.\n", stderr);
	return CLI_EXIT_FAIL;
}

static void usage(FILE *f)
{
	fputs("usage: uqcow [GLOBAL OPTIONS] VERB [OPTIONS] ARGS...\n"
	      "       uqcow VERB --help\n\nVerbs:\n", f);
	for (size_t i = 0; i < NVERBS; i++)
		fprintf(f, "  %-9s %s\n", verbs[i]->name, verbs[i]->summary);
	fputs("\nGlobal options (also accepted after the verb):\n"
	      "  --io=io_uring|psync|auto  I/O backend (default auto: io_uring,\n"
	      "                            psync where io_uring is unavailable)\n"
	      "  --cache=none|writeback    none bypasses the page cache (O_DIRECT)\n"
	      "  --l2-cache-size=SIZE      L2 table cache (default: the whole\n"
	      "                            image, up to 32 MiB)\n"
	      "  --refcount-cache-size=SIZE  refcount blocks kept in memory\n"
	      "                            (default 4 MiB; at least 2 blocks)\n"
	      "  -U, --force-share         open read-only without the image locks that\n"
	      "                            keep out writers, as qemu-img -U (verbs that\n"
	      "                            write refuse it)\n"
	      "  --image-opts              FILE is qemu's option string:\n"
	      "                            driver=qcow2,file.filename=PATH,\n"
	      "                            discard-no-unref=on,l2-cache-size=1M,...\n"
	      "  -h, --help                this text\n"
	      "  -V, --version             print the version\n"
	      "\nSIZE and OFFSET take k, M, G, T, P, E suffixes (binary), as\n"
	      "qemu-img does.\n", f);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open defaults;
	const struct cli_verb *v;
	int c;

	cli_open_defaults(&defaults);
	opterr = 0;
	/* '+': stop at the verb; what follows belongs to it. */
	while ((c = getopt_long(argc, argv, "+:hVU", longopts, NULL)) != -1) {
		int r = cli_open_option(&defaults, c, optarg);

		if (r < 0)
			return CLI_EXIT_FAIL;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			usage(stdout);
			return CLI_EXIT_OK;
		case 'V':
			printf("uqcow version " UQCOW_VERSION "\n");
			return CLI_EXIT_OK;
		case ':':
			cli_error("option '%s' needs an argument", argv[optind - 1]);
			return usage_error();
		default:
			cli_error("unknown option '%s'", argv[optind - 1]);
			return usage_error();
		}
	}
	if (optind >= argc) {
		cli_error("no verb given");
		return usage_error();
	}
	if (!strcmp(argv[optind], "help")) {
		if (optind + 1 >= argc) {
			usage(stdout);
			return CLI_EXIT_OK;
		}
		v = find_verb(argv[optind + 1]);
		if (!v) {
			cli_error("unknown verb '%s'", argv[optind + 1]);
			return CLI_EXIT_FAIL;
		}
		cli_usage(v, stdout);
		return CLI_EXIT_OK;
	}
	v = find_verb(argv[optind]);
	if (!v) {
		cli_error("unknown verb '%s'", argv[optind]);
		return usage_error();
	}
	argc -= optind;
	argv += optind;
	optind = 0;     /* glibc: 0 fully resets getopt for the verb's parse */
	return v->run(argc, argv, &defaults);
}
