/* SPDX-License-Identifier: MIT */
/* qemu-img's -o options for creating qcow2 and raw images: the key table,
 * parsing with qemu's rules, help, the Formatting line, uq_create_opts. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imgopts.h"

enum kind { K_SIZE, K_NUM, K_BOOL, K_STR };

static const struct key {
	const char *name;
	enum kind kind;
	const char *def;      /* printed on the Formatting line if not given */
	bool raw;             /* raw takes it too */
	const char *help;
} keys[IMGOPT_NKEYS] = {
	[IMGOPT_CLUSTER_SIZE] = { "cluster_size", K_SIZE, "65536", false,
		"qcow2 cluster size" },
	[IMGOPT_EXTENDED_L2] = { "extended_l2", K_BOOL, "off", false,
		"Extended L2 tables" },
	[IMGOPT_PREALLOCATION] = { "preallocation", K_STR, NULL, true,
		"Preallocation mode (allowed values: off, metadata, falloc, full)" },
	[IMGOPT_COMPRESSION_TYPE] = { "compression_type", K_STR, "zlib", false,
		"Compression method used for image cluster compression" },
	[IMGOPT_SIZE] = { "size", K_SIZE, NULL, true, "Virtual disk size" },
	[IMGOPT_COMPAT] = { "compat", K_STR, NULL, false,
		"Compatibility level (v2 [0.10] or v3 [1.1])" },
	[IMGOPT_BACKING_FILE] = { "backing_file", K_STR, NULL, false,
		"File name of a base image" },
	[IMGOPT_BACKING_FMT] = { "backing_fmt", K_STR, NULL, false,
		"Image format of the base image" },
	[IMGOPT_DATA_FILE] = { "data_file", K_STR, NULL, false,
		"File name of an external data file" },
	[IMGOPT_DATA_FILE_RAW] = { "data_file_raw", K_BOOL, NULL, false,
		"The external data file must stay valid as a raw image" },
	[IMGOPT_LAZY_REFCOUNTS] = { "lazy_refcounts", K_BOOL, "off", false,
		"Postpone refcount updates" },
	[IMGOPT_REFCOUNT_BITS] = { "refcount_bits", K_NUM, "16", false,
		"Width of a reference count entry in bits" },
};

/* raw prints its size first (a format option), then the file's ones. */
static const enum imgopt_key raw_order[] = { IMGOPT_SIZE, IMGOPT_PREALLOCATION };

static bool is_raw(const struct imgopts *o)
{
	return !strcmp(o->format, "raw");
}

void imgopts_init(struct imgopts *o, const char *format)
{
	memset(o, 0, sizeof(*o));
	o->format = format;
}

void imgopts_free(struct imgopts *o)
{
	for (int i = 0; i < IMGOPT_NKEYS; i++) {
		free(o->val[i]);
		o->val[i] = NULL;
	}
}

bool imgopts_has(const struct imgopts *o, enum imgopt_key k)
{
	return o->val[k] != NULL;
}

const char *imgopts_key_name(enum imgopt_key k)
{
	return keys[k].name;
}

int imgopts_bool(const char *val, bool *out)
{
	if (!strcmp(val, "on") || !strcmp(val, "yes") || !strcmp(val, "true"))
		*out = true;
	else if (!strcmp(val, "off") || !strcmp(val, "no") ||
		 !strcmp(val, "false"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

/* qemu_strtou64 with base 0: decimal, 0x hex, 0 octal; no sign. */
static int parse_number(const char *s, uint64_t *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno || *end ? -EINVAL : 0;
}

int imgopts_set(struct imgopts *o, enum imgopt_key k, const char *val,
		const char *what)
{
	const struct key *d = &keys[k];
	uint64_t n = 0;
	bool b;
	char *dup;

	if (d->kind == K_SIZE && cli_parse_size(val, &n) < 0) {
		cli_error("%s: Parameter '%s' expects a non-negative number below "
			  "2^64 (optional suffix k, M, G, T, P or E)", what, d->name);
		return -EINVAL;
	}
	if (d->kind == K_NUM && parse_number(val, &n) < 0) {
		cli_error("%s: Parameter '%s' expects a number", what, d->name);
		return -EINVAL;
	}
	if (d->kind == K_BOOL && imgopts_bool(val, &b) < 0) {
		cli_error("%s: Parameter '%s' expects 'on' or 'off'", what, d->name);
		return -EINVAL;
	}
	dup = strdup(val);
	if (!dup) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	free(o->val[k]);
	o->val[k] = dup;
	o->num[k] = n;
	return 0;
}

void imgopts_set_size(struct imgopts *o, uint64_t size)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRIu64, size);
	free(o->val[IMGOPT_SIZE]);
	o->val[IMGOPT_SIZE] = strdup(buf);
	o->num[IMGOPT_SIZE] = size;
}

static int find_key(const struct imgopts *o, const char *name)
{
	for (int i = 0; i < IMGOPT_NKEYS; i++)
		if (!strcmp(keys[i].name, name))
			return !is_raw(o) || keys[i].raw ? i : -1;
	return -1;
}

/* Cut the next "k=v" off *p, turning ",," into ","; NULL at the end. */
static char *next_item(char **p)
{
	char *start = *p, *r, *w;

	if (!start || !*start)
		return NULL;
	for (r = w = start; *r; r++) {
		if (*r == ',' && r[1] == ',') {
			*w++ = ',';
			r++;
		} else if (*r == ',') {
			break;
		} else {
			*w++ = *r;
		}
	}
	*p = *r ? r + 1 : r;
	*w = '\0';
	return start;
}

int imgopts_parse(struct imgopts *o, const char *arg, const char *what)
{
	char *dup = strdup(arg), *p = dup, *kv;
	int ret = 0;

	if (!dup) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	while (!ret && (kv = next_item(&p))) {
		char *val = strchr(kv, '=');
		int k;

		if (val)
			*val++ = '\0';
		if (!*kv)
			continue;
		if (!strcmp(kv, "help") || !strcmp(kv, "?")) {
			o->help = true;
			continue;
		}
		k = find_key(o, kv);
		if (k < 0) {
			cli_error("%s: Invalid parameter '%s'", what, kv);
			ret = -EINVAL;
		} else if (!val && keys[k].kind != K_BOOL) {
			cli_error("%s: Parameter '%s' needs a value (%s=...)", what, kv,
				  kv);
			ret = -EINVAL;
		} else {
			/* a bare boolean key means on, as in qemu */
			ret = imgopts_set(o, (enum imgopt_key)k, val ? val : "on", what);
		}
	}
	free(dup);
	return ret;
}

static const char *type_str(enum kind k)
{
	switch (k) {
	case K_SIZE: return "<size>";
	case K_NUM: return "<num>";
	case K_BOOL: return "<bool (on/off)>";
	default: return "<str>";
	}
}

void imgopts_help(const char *format, const char *intro)
{
	/* alphabetical, as qemu-img lists them */
	static const enum imgopt_key order[] = {
		IMGOPT_BACKING_FILE, IMGOPT_BACKING_FMT, IMGOPT_CLUSTER_SIZE,
		IMGOPT_COMPAT, IMGOPT_COMPRESSION_TYPE, IMGOPT_DATA_FILE,
		IMGOPT_DATA_FILE_RAW, IMGOPT_EXTENDED_L2, IMGOPT_LAZY_REFCOUNTS,
		IMGOPT_PREALLOCATION, IMGOPT_REFCOUNT_BITS, IMGOPT_SIZE,
	};
	bool raw = !strcmp(format, "raw");

	printf("%s %s options:\n", intro, format);
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		const struct key *d = &keys[order[i]];
		char name[64];

		if (raw && !d->raw)
			continue;
		snprintf(name, sizeof(name), "%s=%s", d->name, type_str(d->kind));
		printf("  %-22s - %s\n", name,
		       raw && order[i] == IMGOPT_PREALLOCATION ?
		       "Preallocation mode (allowed values: off, falloc, full)" :
		       d->help);
	}
}

/* A string value as qemu prints it: commas doubled. */
static void print_str(const char *s)
{
	for (; *s; s++) {
		if (*s == ',')
			putchar(',');
		putchar(*s);
	}
}

static void print_key(const struct imgopts *o, enum imgopt_key k)
{
	const struct key *d = &keys[k];
	const char *v = o->val[k] ? o->val[k] : d->def;

	if (!v)
		return;
	printf(" %s=", d->name);
	if ((d->kind == K_SIZE || d->kind == K_NUM) && o->val[k])
		printf("%" PRIu64, o->num[k]);
	else if (d->kind == K_STR)
		print_str(v);
	else
		fputs(v, stdout);
}

void imgopts_print(const struct imgopts *o, const char *path)
{
	printf("Formatting '%s', fmt=%s", path, o->format);
	if (is_raw(o)) {
		for (size_t i = 0; i < sizeof(raw_order) / sizeof(raw_order[0]); i++)
			print_key(o, raw_order[i]);
	} else {
		for (int k = 0; k < IMGOPT_NKEYS; k++)
			print_key(o, (enum imgopt_key)k);
	}
	putchar('\n');
	fflush(stdout);
}

static int bad_value(const char *what, const char *key, const char *val,
		     const char *allowed)
{
	cli_error("%s: Parameter '%s' does not accept value '%s' (%s)", what, key,
		  val, allowed);
	return -EINVAL;
}

static int enum_value(const struct imgopts *o, enum imgopt_key k,
		      const char *const *names, int n, int *out, const char *what,
		      const char *allowed)
{
	const char *v = o->val[k];

	if (!v)
		return 0;
	for (int i = 0; i < n; i++)
		if (!strcmp(v, names[i])) {
			*out = i;
			return 0;
		}
	return bad_value(what, keys[k].name, v, allowed);
}

static void bool_value(const struct imgopts *o, enum imgopt_key k, int *out)
{
	bool b = false;

	if (o->val[k])
		imgopts_bool(o->val[k], &b);   /* checked when set */
	*out = b;
}

int imgopts_to_create(const struct imgopts *o, struct uq_create_opts *c,
		      const char *what)
{
	static const char *const prealloc[] = { "off", "metadata", "falloc",
						"full" };
	static const char *const ctype[] = { "zlib", "zstd" };
	int v, ret;

	v = UQ_PREALLOC_OFF;
	ret = enum_value(o, IMGOPT_PREALLOCATION, prealloc, 4, &v, what,
			 "off, metadata, falloc or full");
	if (ret < 0)
		return ret;
	c->prealloc = (enum uq_prealloc)v;
	ret = enum_value(o, IMGOPT_COMPRESSION_TYPE, ctype, 2,
			 &c->compression_type, what, "zlib or zstd");
	if (ret < 0)
		return ret;
	if (o->val[IMGOPT_COMPAT]) {
		const char *cv = o->val[IMGOPT_COMPAT];

		if (!strcmp(cv, "0.10") || !strcmp(cv, "v2"))
			c->version = 2;
		else if (!strcmp(cv, "1.1") || !strcmp(cv, "v3"))
			c->version = 3;
		else
			return bad_value(what, "compat", cv, "0.10, 1.1, v2 or v3");
	}
	if (o->val[IMGOPT_CLUSTER_SIZE]) {
		uint64_t cs = o->num[IMGOPT_CLUSTER_SIZE];

		if (cs < 512 || cs > (2u << 20))
			return bad_value(what, "cluster_size", o->val[IMGOPT_CLUSTER_SIZE],
					 "a power of two between 512 and 2M");
		c->cluster_size = (uint32_t)cs;
	}
	if (o->val[IMGOPT_REFCOUNT_BITS]) {
		uint64_t rb = o->num[IMGOPT_REFCOUNT_BITS];

		if (rb < 1 || rb > 64)
			return bad_value(what, "refcount_bits",
					 o->val[IMGOPT_REFCOUNT_BITS],
					 "a power of two between 1 and 64");
		c->refcount_bits = (uint32_t)rb;
	}
	bool_value(o, IMGOPT_LAZY_REFCOUNTS, &c->lazy_refcounts);
	bool_value(o, IMGOPT_EXTENDED_L2, &c->extended_l2);
	bool_value(o, IMGOPT_DATA_FILE_RAW, &c->data_file_raw);
	c->backing_file = o->val[IMGOPT_BACKING_FILE];
	c->backing_format = o->val[IMGOPT_BACKING_FMT];
	c->data_file = o->val[IMGOPT_DATA_FILE];
	/* As qemu-img: a raw data file must be readable through the qcow2
	 * view as it is, so every cluster gets mapped (to its own offset). */
	if (c->data_file_raw && c->prealloc == UQ_PREALLOC_OFF)
		c->prealloc = UQ_PREALLOC_METADATA;
	if (o->val[IMGOPT_SIZE])
		c->size = o->num[IMGOPT_SIZE];
	return 0;
}
