/* The volume C API end to end; tests/e2e/test_volumes.py runs it with a volume name prefix
 * as argv[1]. Prints "ok NAME" per check and exits non-zero at the first failure. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capsule.h>

#include "check.h"

int main(int argc, char **argv)
{
	CHECK(argc == 2, "usage: volume_api_check PREFIX");
	char quota[64], plain[64];
	snprintf(quota, sizeof(quota), "%s-q", argv[1]);
	snprintf(plain, sizeof(plain), "%s-p", argv[1]);
	capsule_error err = { 0 };

	CHECK(capsule_volume_create(quota, 16u << 20, &err) == 0, "create quota: %s", err.message);
	CHECK(capsule_volume_create(plain, 0, &err) == 0, "create plain: %s", err.message);
	CHECK(capsule_volume_create(plain, 0, &err) == -EEXIST, "duplicate create: %s", err.message);
	CHECK(capsule_volume_create("bad/name", 0, &err) == -EINVAL, "bad name accepted");
	CHECK(capsule_volume_create("small", 1u << 20, &err) == -EINVAL, "small quota accepted");
	capsule_volume_info info;
	CHECK(capsule_volume_inspect(&info, quota, &err) == 0, "inspect: %s", err.message);
	CHECK(!strcmp(info.kind, "ext4") && info.quota_bytes == 16u << 20 && !info.in_use, "inspect fields");
	char *json;
	CHECK(capsule_volume_inspect_json(&json, plain, &err) == 0, "inspect json: %s", err.message);
	CHECK(strstr(json, "\"folder\"") != NULL, "inspect json: %s", json);
	free(json);
	capsule_volume_info *list;
	size_t n;
	CHECK(capsule_volume_list(&list, &n, &err) == 0, "list: %s", err.message);
	int seen = 0;
	for (size_t i = 0; i < n; i++)
		seen += !strcmp(list[i].name, quota) + !strcmp(list[i].name, plain);
	free(list);
	CHECK(seen == 2, "list saw %d of 2", seen);
	CHECK(capsule_volume_list_json(&json, &err) == 0 && strstr(json, quota), "list json");
	free(json);
	printf("ok create-inspect-list\n");

	CHECK(capsule_volume_write(quota, "/dir/hello", "hi\n", 3, &err) == 0, "write: %s", err.message);
	void *buf;
	size_t len;
	CHECK(capsule_volume_read(&buf, &len, quota, "dir/hello", 1024, &err) == 0, "read: %s", err.message);
	CHECK(len == 3 && !memcmp(buf, "hi\n", 3), "read back %zu bytes", len);
	free(buf);
	CHECK(capsule_volume_read(&buf, &len, quota, "dir/hello", 2, &err) == -EFBIG, "max_bytes ignored: %s",
	      err.message);
	printf("ok buffers\n");

	/* Streaming: 8 MiB through a pipe in, and out to a file, checked byte for byte. */
	int p[2];
	CHECK(pipe(p) == 0, "pipe");
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		static unsigned char chunk[65536];
		for (int i = 0; i < 128; i++) {
			memset(chunk, i, sizeof(chunk));
			if (write(p[1], chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk))
				_exit(1);
		}
		_exit(0);
	}
	close(p[1]);
	CHECK(capsule_volume_write_from_fd(plain, "/big", p[0], &err) == 0, "write_from_fd: %s", err.message);
	close(p[0]);
	CHECK(waitpid(pid, NULL, 0) == pid, "waitpid");
	char tmpl[] = "/tmp/capsule-volapi-XXXXXX";
	int out = mkstemp(tmpl);
	CHECK(out >= 0, "mkstemp");
	unlink(tmpl);
	CHECK(capsule_volume_read_to_fd(plain, "/big", out, &err) == 0, "read_to_fd: %s", err.message);
	CHECK(lseek(out, 0, SEEK_END) == 128 * 65536, "read_to_fd size");
	static unsigned char back[65536];
	for (int i = 0; i < 128; i++) {
		CHECK(pread(out, back, sizeof(back), (off_t)i * 65536) == (ssize_t)sizeof(back), "pread");
		for (size_t k = 0; k < sizeof(back); k++)
			CHECK(back[k] == (unsigned char)i, "byte %zu of chunk %d", k, i);
	}
	close(out);
	printf("ok streams\n");

	capsule_config *cfg;
	CHECK(capsule_config_new(&cfg, &err) == 0, "config: %s", err.message);
	CHECK(capsule_config_add_volume(cfg, "../x", "/x", false, &err) == -EINVAL, "bad volume name accepted");
	CHECK(capsule_config_add_volume(cfg, quota, "relative", false, &err) == -EINVAL, "relative target accepted");
	CHECK(capsule_config_add_volume(cfg, quota, "/q", true, &err) == 0, "add_volume: %s", err.message);
	CHECK(capsule_config_add_volume(cfg, plain, "/q", false, &err) == -EEXIST, "two mounts at /q accepted");
	CHECK(capsule_config_add_volume(cfg, plain, "/p", false, &err) == 0, "add_volume: %s", err.message);
	capsule_sandbox *sb;
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "sandbox: %s", err.message);
	capsule_config_free(cfg);
	const char *sh[] = { "sh", "-c", "cat /q/dir/hello; wc -c < /p/big; touch /q/x 2>/dev/null || echo ro", NULL };
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = sh;
	capsule_exec_result r;
	CHECK(capsule_exec(&r, sb, &o, NULL, 0, 4096, &err) == 0, "exec: %s", err.message);
	CHECK(!strcmp(r.stdout_buf, "hi\n8388608\nro\n"), "in the sandbox: '%s'", r.stdout_buf);
	capsule_exec_result_free(&r);
	CHECK(capsule_volume_remove(quota, &err) == -EBUSY, "rm in use: %s", err.message);
	CHECK(strstr(err.message, "in use by a sandbox") != NULL, "rm in use message: %s", err.message);
	capsule_sandbox_free(sb);
	printf("ok sandbox\n");

	CHECK(capsule_volume_remove(quota, &err) == 0, "rm: %s", err.message);
	CHECK(capsule_volume_remove(plain, &err) == 0, "rm: %s", err.message);
	CHECK(capsule_volume_remove(plain, &err) == -ENOENT, "rm twice: %s", err.message);
	printf("ok remove\n");
	return 0;
}
