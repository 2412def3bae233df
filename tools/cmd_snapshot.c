/* SPDX-License-Identifier: MIT */
/* uqcow snapshot: list, create, apply and delete internal snapshots as
 * qemu-img snapshot does; and the -l SNAPSHOT selector other verbs share. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

enum action { A_NONE, A_LIST, A_CREATE, A_APPLY, A_DELETE };

/* One row as qemu's bdrv_snapshot_dump prints it (info prints the same
 * table; kept here too so each verb stays one file). */
static void row(const struct uq_snapshot_info *s)
{
	char date[64] = "", clock[64], size[32], icount[32] = "";
	time_t t = (time_t)s->date_sec;
	uint64_t secs = s->vm_clock_nsec / 1000000000ull;
	struct tm tm;

	if (localtime_r(&t, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d",
		 (int)(secs / 3600), (int)((secs / 60) % 60), (int)(secs % 60),
		 (int)((s->vm_clock_nsec / 1000000) % 1000));
	cli_size_str(s->vm_state_size, size, sizeof(size));
	if (s->icount != UINT64_MAX)
		snprintf(icount, sizeof(icount), "%" PRIu64, s->icount);
	printf("%-9s %-16s %8s%20s%13s%11s\n", s->id, s->name, size, date, clock, icount);
}

static int list(uq_image *img, const char *path)
{
	struct uq_info *in;
	int ret = cli_get_info(img, path, &in);

	/* like qemu-img, nothing at all when there are no snapshots */
	if (ret == 0 && in->nb_snapshots)
		printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG",
		       "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
	for (uint32_t i = 0; ret == 0 && i < in->nb_snapshots; i++) {
		struct uq_snapshot_info s = { .struct_size = sizeof(s) };
		ret = uq_snapshot_get(img, i, &s);
		if (ret < 0)
			cli_error_uq(ret, path);
		else
			row(&s);
	}
	free(in);
	return ret;
}

/* qemu-img convert -l: "NAME_OR_ID", or "snapshot.id=ID[,snapshot.name=NAME]"
 * (either key, both must match when both are given). */
int cli_snapshot_select(uq_image *img, const char *param)
{
	char *opts, *save = NULL, *id = NULL, *name = NULL;
	uint32_t i;
	int ret = 0;

	if (strncmp(param, "snapshot.", 9)) {
		ret = uq_snapshot_view(img, param);
		if (ret < 0)
			cli_error("Failed to load snapshot: %s", uq_errmsg());
		return ret;
	}
	opts = strdup(param);
	if (!opts) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	for (char *kv = strtok_r(opts, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		if (!strncmp(kv, "snapshot.id=", 12)) {
			id = kv + 12;
		} else if (!strncmp(kv, "snapshot.name=", 14)) {
			name = kv + 14;
		} else {
			cli_error("invalid snapshot option '%s' (snapshot.id=ID or "
				  "snapshot.name=NAME)", kv);
			ret = -EINVAL;
		}
	}
	for (i = 0; ret == 0; i++) {
		struct uq_snapshot_info s = { .struct_size = sizeof(s) };
		if (uq_snapshot_get(img, i, &s) < 0) {
			cli_error("Failed to load snapshot: no snapshot with%s%s%s%s%s",
				  id ? " ID " : "", id ? id : "", id && name ? " and" : "",
				  name ? " name " : "", name ? name : "");
			ret = -ENOENT;
		} else if ((!id || !strcmp(s.id, id)) && (!name || !strcmp(s.name, name))) {
			/* IDs are unique and win the lookup */
			ret = uq_snapshot_view(img, s.id);
			if (ret < 0)
				cli_error("Failed to load snapshot: %s", uq_errmsg());
			break;
		}
	}
	free(opts);
	return ret;
}

static int set_action(enum action *a, enum action want, const char **name, const char *arg)
{
	if (*a != A_NONE) {
		cli_error("Cannot mix '-l', '-a', '-c', '-d'");
		return -EINVAL;
	}
	*a = want;
	*name = arg;
	return 0;
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	static const char *const verb[] = {
		[A_CREATE] = "create", [A_APPLY] = "apply", [A_DELETE] = "delete",
	};
	struct cli_open o = *defaults;
	enum action a = A_NONE;
	const char *name = NULL, *path;
	uq_image *img = NULL;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":hf:la:c:d:qU", longopts, NULL)) != -1) {
		int r = cli_image_option(&o, c, optarg, true);

		if (r < 0)
			return CLI_EXIT_FAIL;
		if (r > 0)
			continue;
		switch (c) {
		case 'h':
			cli_usage(&cmd_snapshot, stdout);
			return CLI_EXIT_OK;
		case 'l':
			r = set_action(&a, A_LIST, &name, NULL);
			break;
		case 'a':
			r = set_action(&a, A_APPLY, &name, optarg);
			break;
		case 'c':
			r = set_action(&a, A_CREATE, &name, optarg);
			break;
		case 'd':
			r = set_action(&a, A_DELETE, &name, optarg);
			break;
		case 'q':
			break;   /* nothing is printed but the list and errors */
		default:
			return cli_opt_error(&cmd_snapshot, c, argv);
		}
		if (r < 0)
			return CLI_EXIT_FAIL;
	}
	if (argc - optind != 1)
		return cli_bad_usage(&cmd_snapshot, "expecting one image file name");
	path = argv[optind];
	if (a == A_NONE)
		a = A_LIST;   /* qemu-img lists when no action is given */
	if (cli_open_image(path, &o, a == A_LIST ? 0 : UQ_OPEN_RDWR, &img) < 0)
		return CLI_EXIT_FAIL;
	switch (a) {
	case A_LIST:
		ret = list(img, path);
		break;
	case A_CREATE:
		ret = uq_snapshot_create(img, name);
		break;
	case A_APPLY:
		ret = uq_snapshot_apply(img, name);
		break;
	default:
		ret = uq_snapshot_delete(img, name);
		break;
	}
	if (ret < 0 && a != A_LIST)
		cli_error("Could not %s snapshot '%s': %s", verb[a], name, uq_errmsg());
	c = uq_close(img);
	if (c < 0 && ret == 0) {
		cli_error_uq(c, path);
		ret = c;
	}
	if (fflush(stdout) && ret == 0) {
		cli_error("writing output: %s", strerror(errno));
		ret = -EIO;
	}
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_snapshot = {
	.name = "snapshot",
	.summary = "list, create, apply or delete internal snapshots (qemu-img snapshot)",
	.run = run,
	.synopsis = "snapshot [-f FMT] [-q] [-U] [-l | -c NAME | -a SNAPSHOT | -d SNAPSHOT] FILE",
	.help =
	"  -l             list the snapshots (the default)\n"
	"  -c NAME        create a snapshot of the current disk state\n"
	"  -a SNAPSHOT    apply: revert the disk to SNAPSHOT (its size too)\n"
	"  -d SNAPSHOT    delete SNAPSHOT\n"
	"  -f FMT         image format: qcow2 (default: probe)\n"
	"  -q             quiet (accepted; only errors are printed)\n"
	"  -U, --force-share\n"
	"                 with -l: list without the image locks that keep out\n"
	"                 writers (qemu-img -U), while another process writes\n"
	"  --io=io_uring|psync, --cache=none|writeback\n"
	"\nSNAPSHOT is an ID or a name: an ID match wins, else the first snapshot\n"
	"with that name. Snapshots need refcount_bits >= 2; each one adds a\n"
	"reference to every cluster it shares, so narrow widths hold few\n"
	"(refcount_bits=2: the active state and two snapshots of a cluster).\n"
	"Read a snapshot with convert -l, map -l or compare -l/-L.\n",
};
