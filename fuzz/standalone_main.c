// SPDX-License-Identifier: MIT
/* Replay driver for builds without libFuzzer (gcc, or clang without
 * -Dfuzzing): runs LLVMFuzzerTestOneInput on every file named, recursing
 * into directories, so `meson test --suite fuzz` replays the corpora. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
			       unsigned int seed) __attribute__((weak));
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size)
	__attribute__((weak));

/* Targets that check only a sample of inputs deeply when fuzzing
 * (image_ops) check every input deeply when replayed by this main. */
const int uq_fuzz_standalone = 1;

static bool skip_missing;   /* --skip-missing: absent paths are not errors */
static unsigned mutate_rounds;   /* -mutate=N: also run N custom mutations */
static unsigned timeout_sec;     /* -timeout=N: fail an input that runs longer */
static const char *current;      /* the input being run, for the timeout */
static unsigned long ran, failed;
static uint64_t rng = 0x853c49e6748fea9bull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Stand-in for libFuzzer's mutator so targets with a custom mutator link
 * (and can be exercised with -mutate=N) without libFuzzer. */
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size)
{
	size_t n;

	switch (rnd() % 4) {
	case 0:   /* grow by a few bytes */
		n = size + 1 + (size_t)(rnd() % 16);
		if (n > max_size)
			n = max_size;
		for (size_t i = size; i < n; i++)
			data[i] = (uint8_t)rnd();
		return n;
	case 1:   /* shrink */
		return size > 1 ? size - 1 - (size_t)(rnd() % (size - 1)) / 2 : size;
	default:  /* overwrite a few bytes */
		for (unsigned k = 0; size && k < 1 + rnd() % 8; k++)
			data[rnd() % size] = (uint8_t)rnd();
		return size;
	}
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0) {
		/* exact size, so reads past the input hit ASan's redzone */
		buf = malloc(n ? (size_t)n : 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)n;
	}
	fclose(f);
	return buf;
}

static void run_input(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy) {
		perror("malloc");
		exit(1);
	}
	memcpy(copy, data, size);
	LLVMFuzzerTestOneInput(copy, size);
	free(copy);
	ran++;
}

static void run_mutations(const char *path, const uint8_t *data, size_t size)
{
	size_t max = size + 4096, len = size;
	uint8_t *buf = malloc(max);
	unsigned seed = 5381;

	if (!buf) {
		perror("malloc");
		exit(1);
	}
	for (const char *p = path; *p; p++)
		seed = seed * 33 + (unsigned char)*p;
	memcpy(buf, data, size);
	for (unsigned i = 0; i < mutate_rounds; i++) {
		len = LLVMFuzzerCustomMutator(buf, len, max, seed + i);
		if (len > max) {
			fprintf(stderr, "%s: mutator returned %zu > %zu\n", path,
				len, max);
			abort();
		}
		run_input(buf, len);
	}
	free(buf);
}

/* Like libFuzzer's -timeout: a hang is a failure that names its input. */
static void on_alarm(int sig)
{
	static const char msg[] = "timeout: input ran longer than -timeout: ";
	ssize_t r;

	(void)sig;
	r = write(2, msg, sizeof(msg) - 1);
	r = write(2, current, strlen(current));
	r = write(2, "\n", 1);
	(void)r;
	_exit(1);
}

static void run_file(const char *path)
{
	size_t len = 0;
	uint8_t *data = read_file(path, &len);

	if (!data) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno ? errno : EIO));
		failed++;
		return;
	}
	fprintf(stderr, "Running: %s (%zu bytes)\n", path, len);
	current = path;
	alarm(timeout_sec);
	run_input(data, len);
	if (mutate_rounds && LLVMFuzzerCustomMutator)
		run_mutations(path, data, len);
	alarm(0);
	free(data);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_path(const char *path);

/* Directories in name order, so runs are reproducible. */
static void run_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (!d) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		failed++;
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names) {
				perror("realloc");
				exit(1);
			}
		}
		size_t len = strlen(path) + strlen(de->d_name) + 2;

		names[n] = malloc(len);
		if (!names[n]) {
			perror("malloc");
			exit(1);
		}
		snprintf(names[n++], len, "%s/%s", path, de->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		run_path(names[i]);
		free(names[i]);
	}
	free(names);
}

static void run_path(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT && skip_missing) {
			fprintf(stderr, "%s: not present, skipped\n", path);
			return;
		}
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		failed++;
		return;
	}
	if (S_ISDIR(st.st_mode))
		run_dir(path);
	else
		run_file(path);
}

int main(int argc, char **argv)
{
	signal(SIGALRM, on_alarm);
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--skip-missing"))
			skip_missing = true;
		else if (!strncmp(a, "-mutate=", 8))
			mutate_rounds = (unsigned)strtoul(a + 8, NULL, 10);
		else if (!strncmp(a, "-timeout=", 9))
			timeout_sec = (unsigned)strtoul(a + 9, NULL, 10);
		else if (a[0] == '-')   /* libFuzzer flags mean nothing here */
			fprintf(stderr, "ignoring option %s\n", a);
		else
			run_path(a);
	}
	fprintf(stderr, "%lu inputs run, %lu unreadable\n", ran, failed);
	if (failed)
		return 1;
	return ran ? 0 : 77;   /* nothing to replay: a visible skip */
}
