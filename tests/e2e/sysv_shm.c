/* A System V shared memory segment by key, for the tests of a pod's shared IPC namespace
 * (tests/e2e/test_oci.py, test_oci_cri.py); built static, it runs in a busybox root.
 *   sysv_shm make KEY TEXT [MODE]   a segment of KEY (mode MODE, octal, 0666 unless given)
 *                                   holding TEXT
 *   sysv_shm read KEY        print the text of KEY's segment; exit 2 when there is none */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv)
{
	if (argc < 3 || (strcmp(argv[1], "make") && strcmp(argv[1], "read")) || (!strcmp(argv[1], "make") && argc < 4)) {
		fprintf(stderr, "usage: sysv_shm make KEY TEXT [MODE] | read KEY\n");
		return 1;
	}
	key_t key = (key_t)strtol(argv[2], NULL, 0);
	bool make = !strcmp(argv[1], "make");
	int mode = make && argc > 4 ? (int)strtol(argv[4], NULL, 8) & 0777 : 0666;
	int id = shmget(key, 4096, make ? IPC_CREAT | IPC_EXCL | mode : 0);
	if (id < 0) {
		fprintf(stderr, "shmget %s: %s\n", argv[2], strerror(errno));
		return errno == ENOENT ? 2 : 1;
	}
	char *p = shmat(id, NULL, 0);
	if (p == (void *)-1) {
		fprintf(stderr, "shmat %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	if (make)
		snprintf(p, 4096, "%s", argv[3]);
	else
		printf("%.4095s\n", p);
	return 0;
}
