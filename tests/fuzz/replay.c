/* Replays saved inputs through a fuzz target's entry point, built with the ordinary compiler
 * and without libFuzzer, so that `make check` runs every input ever kept: the crash inputs
 * (each kept so its bug stays fixed) and the target's minimized corpus, in
 * tests/unit/regressions/<target>/. A target's own checks abort on a broken invariant. An
 * empty or missing folder fails: a replay of nothing proves nothing.
 *
 * Usage: replay_<target> FOLDER */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int read_input(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rbe");
	if (!f)
		return -errno;
	size_t cap = 4096, n = 0;
	uint8_t *buf = malloc(cap);
	while (buf) {
		n += fread(buf + n, 1, cap - n, f);
		if (n < cap)
			break;
		uint8_t *grown = realloc(buf, cap * 2);
		if (!grown) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = grown;
		cap *= 2;
	}
	int failed = ferror(f);
	fclose(f);
	if (!buf || failed) {
		free(buf);
		return buf ? -EIO : -ENOMEM;
	}
	*out = buf;
	*len = n;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s FOLDER\n", argv[0]);
		return 2;
	}
	struct dirent **names;
	int n = scandir(argv[1], &names, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "%s: cannot read '%s': %s\n", argv[0], argv[1], strerror(errno));
		return 1;
	}
	size_t replayed = 0;
	int status = 0;
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", argv[1], names[i]->d_name);
		struct stat st;
		if (names[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			uint8_t *data = NULL;
			size_t len = 0;
			int r = read_input(path, &data, &len);
			if (r < 0) {
				fprintf(stderr, "%s: '%s': %s\n", argv[0], path, strerror(-r));
				status = 1;
			} else {
				LLVMFuzzerTestOneInput(data, len);
				free(data);
				replayed++;
			}
		}
		free(names[i]);
	}
	free(names);
	if (replayed == 0) {
		fprintf(stderr, "%s: no input in '%s': nothing was replayed\n", argv[0], argv[1]);
		return 1;
	}
	printf("%zu inputs replayed from %s\n", replayed, argv[1]);
	return status;
}
