#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"

/* Users, from the sandbox's own /etc/passwd and /etc/group (never through NSS, which would
 * load the sandbox's libraries into the agent), and the set-up a first command needs, done
 * ahead of it once INIT is answered. */

static bool parse_id(const char *s, unsigned long *out)
{
	if (!*s)
		return false;
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > 0xfffffffeUL || s[0] == '-' || s[0] == '+')
		return false;
	*out = v;
	return true;
}

/* Split a passwd/group line in place into at most MAX fields separated by ':'. */
static size_t split_colon(char *line, char **fields, size_t max)
{
	size_t n = 0;
	char *p = line;
	while (n < max) {
		fields[n++] = p;
		char *c = strchr(p, ':');
		if (!c)
			break;
		*c = '\0';
		p = c + 1;
	}
	return n;
}

/* The user files as last read, for the next command's set-up: every command reads
 * /etc/passwd and /etc/group (the default user is uid 0, whose home and groups they give),
 * and an open, read and close through the sandbox's overlay costs about 13 us against 4 for a
 * stat (docs/performance.md, exec29). A stat that finds the same file (device, inode, size,
 * modification and change times) gives the text read before; a replacement changes the inode,
 * a write the change time. Timestamps may be as coarse as a clock tick (filesystems without
 * multigrain timestamps, older kernels): a second write in the tick of the version read could
 * keep its times. So a version is kept only once its change time is USER_FILE_SETTLED_NS in
 * the past: any later write is stamped after it. Small files only: the cache lives as long as
 * the agent. */
#define USER_FILE_CACHE_MAX (64u << 10)
#define USER_FILE_SETTLED_NS (100ll * 1000 * 1000)
static struct user_file_cache {
	const char *path;
	struct stat st;
	char *text;
	size_t len;
} user_files[] = { { .path = "/etc/passwd" }, { .path = "/etc/group" } };

static bool same_file_version(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static struct user_file_cache *user_file_slot(const char *path)
{
	for (size_t i = 0; i < ARRAY_SIZE(user_files); i++)
		if (!strcmp(user_files[i].path, path))
			return &user_files[i];
	return NULL;
}

/* Read a small text file the sandbox controls. Its contents are the sandbox's to choose, but
 * it must not be able to block us: a FIFO or device planted at /etc/passwd would hang PID 1
 * in open() or read(). So: non-blocking open, regular files only, bounded size. */
static int read_sandbox_file(const char *path, char **out)
{
	struct user_file_cache *c = user_file_slot(path);
	struct stat st;
	if (c && c->text && stat(path, &st) == 0 && same_file_version(&st, &c->st)) {
		*out = malloc(c->len + 1);
		if (!*out)
			return -ENOMEM;
		memcpy(*out, c->text, c->len + 1);
		return 0;
	}
	/* openat, not open, here and in a command's set-up: musl's open follows an O_CLOEXEC
	 * open with an fcntl that sets it again, a system call more per file per command. */
	_cleanup_close_ int fd = openat(AT_FDCWD, path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	/* A regular file is read whole when a read comes back short of a buffer one byte larger
	 * than its size: the read that would find the end is not made. */
	size_t len = 0;
	int r = read_fd_all_sized(fd, (size_t)st.st_size, 4u << 20, out, &len);
	/* Kept only when what was read is the whole of the version fstat saw, and that version
	 * has settled. */
	struct timespec now;
	if (r < 0 || !c || len != (size_t)st.st_size || len > USER_FILE_CACHE_MAX ||
	    clock_gettime(CLOCK_REALTIME, &now) < 0 ||
	    (now.tv_sec - st.st_ctim.tv_sec) * 1000000000ll + (now.tv_nsec - st.st_ctim.tv_nsec) < USER_FILE_SETTLED_NS)
		return r;
	char *copy = malloc(len + 1);
	if (!copy)
		return r;
	memcpy(copy, *out, len + 1);
	free(c->text);
	c->st = st;
	c->text = copy;
	c->len = len;
	return r;
}

static void user_files_read(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(user_files); i++) {
		char *text = NULL;
		if (read_sandbox_file(user_files[i].path, &text) == 0)
			free(text);
	}
}

struct passwd_entry {
	uid_t uid;
	gid_t gid;
	char *name;
	char *home;
};

/* The fields F of the first well-formed line of the sandbox's /etc/passwd (already chrooted: we
 * are PID 1 inside the sandbox root) whose name is NAME or whose uid is *UID, its ids parsed
 * into *U and *G; F points into *TEXT, the caller's to free. A missing file is the same as no
 * entry. */
static int passwd_line(const char *name, const uid_t *uid, char **text, char *f[7], unsigned long *u, unsigned long *g)
{
	if (read_sandbox_file("/etc/passwd", text) < 0)
		return -ENOENT;
	char *save = NULL;
	for (char *line = strtok_r(*text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (split_colon(line, f, 7) < 7 || !parse_id(f[2], u) || !parse_id(f[3], g))
			continue;
		if ((name && strcmp(f[0], name) == 0) || (uid && *u == *uid))
			return 0;
	}
	return -ENOENT;
}

/* Find a passwd entry by name or uid. */
static int find_passwd(const char *name, const uid_t *uid, struct passwd_entry *out)
{
	_cleanup_free_ char *text = NULL;
	char *f[7];
	unsigned long u, g;
	int r = passwd_line(name, uid, &text, f, &u, &g);
	if (r < 0)
		return r;
	out->uid = (uid_t)u;
	out->gid = (gid_t)g;
	out->name = strdup(f[0]);
	out->home = strdup(f[5]);
	if (!out->name || !out->home) {
		free(out->name);
		free(out->home);
		return -ENOMEM;
	}
	return 0;
}

/* Look a group up by name in the group file PATH; with USERNAME set, also collect every group
 * listing that user. */
static int scan_groups(const char *path, const char *group_name, gid_t *gid_out, const char *username, gid_t **groups,
		       size_t *ngroups)
{
	_cleanup_free_ char *text = NULL;
	int found = -ENOENT;
	if (read_sandbox_file(path, &text) < 0)
		return -ENOENT;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[4];
		if (split_colon(line, f, 4) < 4)
			continue;
		unsigned long g;
		if (!parse_id(f[2], &g))
			continue;
		if (group_name && strcmp(f[0], group_name) == 0) {
			*gid_out = (gid_t)g;
			found = 0;
		}
		if (!username || !groups)
			continue;
		char *msave = NULL;
		for (char *m = strtok_r(f[3], ",", &msave); m; m = strtok_r(NULL, ",", &msave)) {
			if (strcmp(m, username) != 0 || *ngroups >= 64)
				continue;
			gid_t *ng = realloc(*groups, (*ngroups + 1) * sizeof(gid_t));
			if (!ng)
				return -ENOMEM;
			*groups = ng;
			(*groups)[(*ngroups)++] = (gid_t)g;
		}
	}
	return found;
}

int agent_resolve_user(const char *user, uid_t *uid, gid_t *gid, gid_t **groups, size_t *ngroups, char **home,
		       char *errbuf, size_t errlen)
{
	*groups = NULL;
	*ngroups = 0;
	*home = NULL;
	/* The default is uid 0 by number, as in docker: it works without any passwd file. */
	if (!user || !*user)
		user = "0";
	_cleanup_free_ char *copy = strdup(user);
	if (!copy)
		return -ENOMEM;
	char *group = strchr(copy, ':');
	if (group)
		*group++ = '\0';

	struct passwd_entry pw = { 0 };
	unsigned long id;
	bool numeric = parse_id(copy, &id);
	uid_t want_uid = (uid_t)id;
	int r = numeric ? find_passwd(NULL, &want_uid, &pw) : find_passwd(copy, NULL, &pw);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		if (!numeric) {
			snprintf(errbuf, errlen, "unable to find user '%s': no matching entries in passwd file", copy);
			return -ENOENT;
		}
		/* A numeric uid needs no passwd entry, as in docker. */
		pw.uid = want_uid;
		pw.gid = want_uid;
		pw.home = strdup(want_uid == 0 ? "/root" : "/");
		if (!pw.home)
			return -ENOMEM;
	}
	*uid = pw.uid;
	*gid = pw.gid;
	*home = pw.home;

	if (group) {
		unsigned long g;
		if (parse_id(group, &g)) {
			*gid = (gid_t)g;
		} else if (scan_groups("/etc/group", group, gid, NULL, NULL, NULL) < 0) {
			snprintf(errbuf, errlen, "unable to find group '%s': no matching entries in group file", group);
			free(pw.name);
			free(*home);
			*home = NULL;
			return -ENOENT;
		}
	}
	if (pw.name) {
		gid_t dummy;
		r = scan_groups("/etc/group", NULL, &dummy, pw.name, groups, ngroups);
		free(pw.name);
		if (r == -ENOMEM) {
			free(*home);
			*home = NULL;
			return r;
		}
	}
	return 0;
}

int agent_user_shell(uid_t uid, char *out, size_t size)
{
	_cleanup_free_ char *text = NULL;
	char *f[7];
	unsigned long u, g;
	int r = passwd_line(NULL, &uid, &text, f, &u, &g);
	if (r < 0)
		return r;
	if (f[6][0] != '/' || strlen(f[6]) >= size)
		return -ENOENT;
	snprintf(out, size, "%s", f[6]);
	return 0;
}

int agent_group_gid(const char *group_file, const char *name, gid_t *gid)
{
	return scan_groups(group_file, name, gid, NULL, NULL, NULL);
}

/* ---- ahead of the first command -------------------------------------------------------- */

/* A fresh sandbox's root is a new overlay mount, whose dentries are made at their first
 * lookup, through every layer (ovl_lookup): a first command paid 0.1 to 0.2 ms more than a
 * later one for the names nearly every start walks (the default working directory, the
 * command's folder, the dynamic loader's cache, its preload file, that most often missing,
 * and the library folders), docs/performance.md says (first29). Looked up here once INIT's
 * answer is out and the loop has nothing to do, a pooled sandbox's first command finds them
 * made. A lookup changes nothing the sandbox can see (no access time, no file made; a missing
 * name is a negative dentry, which a file made later replaces). */
static void lookups_warm(void)
{
	static const char *const paths[] = {
		"/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/",
		"/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/",
		"/etc/ld.so.cache", "/etc/ld.so.preload", "/tmp/",
	};
	struct stat st;
	uid_t uid;
	gid_t gid, *groups;
	size_t ngroups;
	char *home, err[8];
	if (agent_resolve_user(NULL, &uid, &gid, &groups, &ngroups, &home, err, sizeof(err)) == 0) {
		if (home)
			(void)stat(home, &st);
		free(home);
		free(groups);
	}
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
		(void)stat(paths[i], &st);
}

static bool user_files_to_read, lookups_to_warm;

void agent_first_command_prepare_after_answer(void)
{
	user_files_to_read = lookups_to_warm = true;
}

void agent_first_command_prepare(int epfd, bool busy)
{
	if (user_files_to_read) {
		user_files_to_read = false;
		user_files_read();
	}
	/* Not ahead of a request already here (a cold run's first command, whose own lookups
	 * these would only delay): the loop's epoll is level-triggered, so a look at it loses
	 * nothing. */
	struct epoll_event probe;
	if (lookups_to_warm && !busy && epoll_wait(epfd, &probe, 1, 0) == 0) {
		lookups_to_warm = false;
		lookups_warm();
	}
}
