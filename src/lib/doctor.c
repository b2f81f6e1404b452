/* capsule doctor: the library asks the shim, which owns the isolation code, what the host
 * supports (and where the state and helpers are). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "home.h"
#include "util.h"

int capsule_doctor_json(char **out_json, capsule_error *err)
{
	_cleanup_free_ char *shim = NULL;
	int r = find_helper("capsule-shim", &shim, err);
	if (r < 0)
		return r;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	char *const argv[] = { (char *)"capsule-shim", (char *)"--probe", NULL };
	extern char **environ;
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return cap_err(err, errno, "fork");
	}
	if (pid == 0) {
		if (dup2(p[1], 1) < 0)
			_exit(127);
		execve(shim, argv, environ);
		_exit(127);
	}
	close(p[1]);
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len + 4096 > cap) {
			char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);
			if (!nb)
				break;
			buf = nb;
		}
		ssize_t n = read(p[0], buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(p[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!buf || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || len < 2) {
		free(buf);
		return cap_err_plain(err, EIO, "'%s --probe' failed", shim);
	}
	buf[len] = '\0';
	char *out = buf;
	*out_json = out;
	return 0;
}
