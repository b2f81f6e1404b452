/* WATCH (docs/protocol.md, "Watching a folder"): a folder's changes, read with inotify from
 * inside the sandbox, sent as event records on stream 1 under the client's credit. One inotify
 * instance a watch; with RECURSIVE, one inotify watch a folder of the tree, added as folders
 * appear. Nothing is lost silently: when the client's credit runs out we stop reading, the
 * kernel's queue fills and says so (IN_Q_OVERFLOW), and every event we could not send, for
 * that or for lack of credit while one read was turned into records, becomes one overflow
 * record sent as soon as there is room again. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"

/* Beside the 256 channels of a connection, bounds of the agent's own: inotify instances are
 * limited per user (128 by default) and each folder watched costs the kernel ~1 KiB. */
#define MAX_WATCHES 64
#define MAX_DIRS_PER_WATCH 8192
/* One read of the inotify fd: at most 256 events of a name each, a few KiB of records per
 * event (a path and a move's from), so a read is started only with this much credit. */
#define READ_BUF 4096
#define MIN_CREDIT (256u * 1024u)
/* The records of a frame: well under CP_MAX_PAYLOAD. */
#define FRAME_MAX (64u * 1024u)
#define SCANNED_RING 64
/* No IN_DONT_FOLLOW: inotify is handed /proc/self/fd/N of a descriptor resolved inside the
 * sandbox (watch_fd), and that magic link must be followed to the descriptor's own file. */
#define DIR_MASK (IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | \
		  IN_ONLYDIR | IN_EXCL_UNLINK)
#define FILE_MASK (IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF)

struct wdir {
	int wd;
	char *path; /* absolute in the sandbox */
};

struct watch {
	bool used;
	uint32_t chan;
	int fd;
	bool recursive;
	bool on_file;     /* PATH is not a folder: its own events */
	bool reading;     /* in the epoll set for EPOLLIN */
	uint64_t credit;  /* stream 1 bytes the client still takes */
	bool overflow;    /* events were lost: one overflow record is due */
	bool ended;       /* the watched folder is gone: OK once the records are out */
	int root_wd;
	struct wdir *dirs;
	size_t ndirs;
	struct cp_writer out; /* records not sent yet */
	/* What a folder's scan reported as created (it was made before the folder's watch was
	 * added): the kernel may report it again, if its watch came first after all. */
	char *scanned[SCANNED_RING];
	size_t scanned_next;
	/* The last modify queued, not queued again until another event comes (a write of 1 MiB
	 * is a few hundred IN_MODIFY). */
	int last_mod_wd;
	char last_mod_name[NAME_MAX + 1];
};

static struct watch watches[MAX_WATCHES];
static int watch_epfd = -1;

void watch_init(int epfd)
{
	watch_epfd = epfd;
}

static struct watch *watch_by_chan(uint32_t chan)
{
	for (size_t i = 0; i < MAX_WATCHES; i++)
		if (watches[i].used && watches[i].chan == chan)
			return &watches[i];
	return NULL;
}

static void set_reading(struct watch *w, bool on)
{
	if (w->reading == on)
		return;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ((uint64_t)(w - watches) << 8) | AGENT_ROLE_WATCH };
	epoll_ctl(watch_epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->fd, &ev);
	w->reading = on;
}

static void watch_release(struct watch *w)
{
	set_reading(w, false);
	if (w->fd >= 0)
		close(w->fd);
	for (size_t i = 0; i < w->ndirs; i++)
		free(w->dirs[i].path);
	free(w->dirs);
	for (size_t i = 0; i < SCANNED_RING; i++)
		free(w->scanned[i]);
	cp_writer_free(&w->out);
	memset(w, 0, sizeof(*w));
	w->fd = -1;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct wdir *dir_by_wd(struct watch *w, int wd)
{
	for (size_t i = 0; i < w->ndirs; i++)
		if (w->dirs[i].wd == wd)
			return &w->dirs[i];
	return NULL;
}

static void dir_forget(struct watch *w, size_t i)
{
	free(w->dirs[i].path);
	w->dirs[i] = w->dirs[--w->ndirs];
}

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + 1 + strlen(name);
	if (n > CP_FS_PATH_MAX)
		return NULL;
	char *p = malloc(n + 1);
	if (p)
		snprintf(p, n + 1, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", name);
	return p;
}

/* Send the queued records as one DATA frame. */
static void flush(struct watch *w)
{
	if (w->overflow && w->out.len + 64 <= w->credit && w->out.len + 64 <= FRAME_MAX) {
		struct cp_watch_event e = { .kind = CP_WATCH_OVERFLOW, .time_ns = realtime_ns() };
		if (cp_watch_event_append(&w->out, &e) == 0)
			w->overflow = false;
	}
	if (w->out.len == 0)
		return;
	/* The payload is the records as they are: the header, then the bytes queued. */
	uint8_t hdr[CP_HEADER_SIZE];
	const struct cp_header h = { .len = (uint32_t)w->out.len, .type = CP_DATA, .flags = CP_STREAM_STDOUT,
				     .chan = w->chan };
	cp_header_encode(hdr, &h);
	agent_send_raw(hdr, sizeof(hdr));
	agent_send_raw(w->out.buf, w->out.len);
	w->credit -= w->out.len;
	w->out.len = 0;
}

/* Queue one record; what does not fit in the credit is lost, and said to be. */
static void queue(struct watch *w, uint32_t kind, const char *path, const char *from, bool is_dir)
{
	if (kind != CP_WATCH_MODIFY)
		w->last_mod_wd = -1;
	struct cp_watch_event e = { .kind = kind, .path = (char *)path, .from = (char *)from,
				    .time_ns = realtime_ns(), .is_dir = is_dir };
	/* A record's own size: a path, a from, four numbers. */
	size_t need = 64 + (path ? strlen(path) : 0) + (from ? strlen(from) : 0);
	if (w->out.len + need > FRAME_MAX)
		flush(w);
	if (w->out.len + need > w->credit) {
		w->overflow = true;
		return;
	}
	if (cp_watch_event_append(&w->out, &e) < 0) {
		cp_writer_free(&w->out);
		cp_writer_init(&w->out);
		w->overflow = true;
	}
}

static void scanned_add(struct watch *w, const char *path)
{
	size_t i = w->scanned_next++ % SCANNED_RING;
	free(w->scanned[i]);
	w->scanned[i] = strdup(path);
}

/* Whether PATH's create was reported by a scan already (and then forget it). */
static bool scanned_take(struct watch *w, const char *path)
{
	for (size_t i = 0; i < SCANNED_RING; i++)
		if (w->scanned[i] && !strcmp(w->scanned[i], path)) {
			free(w->scanned[i]);
			w->scanned[i] = NULL;
			return true;
		}
	return false;
}

/* inotify takes a path and no folder fd, and a path walked plainly would follow the sandbox's
 * links and /proc magic links out of its root. So every watch is added on a descriptor that
 * was resolved inside the sandbox, named by its /proc/self/fd link: the kernel follows that
 * link to the descriptor's file and walks nothing the sandbox chose. (Commands have no
 * CAP_SYS_ADMIN, so they cannot mount over /proc.) */
static int watch_fd(int ifd, int fd, uint32_t mask)
{
	char self[32];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	return inotify_add_watch(ifd, self, mask);
}

/* A folder that appeared at PATH, opened as the sandbox sees it: resolved in its root, its
 * last component not followed (a link put there is not a folder of the tree). */
static int open_dir_at(const char *path)
{
	return fs_open_in_root(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK);
}

/* Watch folder DFD, at PATH (and with the recursive flag, the folders below it, up to the
 * bound); with EMIT, report what is already in a folder that appeared (made before its watch
 * was). DFD is the caller's, and closed here. */
static void add_tree(struct watch *w, int dfd, const char *path, bool emit, int depth)
{
	if (dfd < 0)
		return; /* gone already, or not a folder any more: its own events said so */
	if (w->ndirs >= MAX_DIRS_PER_WATCH) {
		w->overflow = true;
		close(dfd);
		return;
	}
	int wd = watch_fd(w->fd, dfd, DIR_MASK);
	if (wd < 0) {
		/* Out of watches (ENOSPC): what happens below it is lost, and said to be. */
		if (errno == ENOSPC || errno == ENOMEM)
			w->overflow = true;
		close(dfd);
		return;
	}
	struct wdir *d = dir_by_wd(w, wd);
	if (d && depth > 0) {
		close(dfd);
		return; /* watched, and scanned, already */
	}
	if (!d) {
		struct wdir *nd = realloc(w->dirs, (w->ndirs + 1) * sizeof(*nd));
		char *copy = strdup(path);
		if (!nd || !copy) {
			free(copy);
			if (nd)
				w->dirs = nd;
			inotify_rm_watch(w->fd, wd);
			w->overflow = true;
			close(dfd);
			return;
		}
		w->dirs = nd;
		w->dirs[w->ndirs++] = (struct wdir){ .wd = wd, .path = copy };
	}
	if ((!w->recursive && !emit) || depth >= 64) {
		if (depth >= 64)
			w->overflow = true;
		close(dfd);
		return;
	}
	DIR *dir = fdopendir(dfd);
	if (!dir) {
		close(dfd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		_cleanup_free_ char *child = join(path, de->d_name);
		if (!child) {
			w->overflow = true;
			continue;
		}
		bool is_dir = de->d_type == DT_DIR;
		if (emit) {
			queue(w, CP_WATCH_CREATE, child, NULL, is_dir);
			scanned_add(w, child);
		}
		/* One name from a folder we hold: nothing to resolve, and a link is not followed. */
		if (is_dir && w->recursive)
			add_tree(w, openat(dirfd(dir), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC),
				 child, emit, depth + 1);
	}
	closedir(dir);
}

/* Every folder at or below PREFIX: renamed to TO (a move inside the tree), or unwatched (TO
 * NULL: moved out of it, or deleted). */
static void retarget(struct watch *w, const char *prefix, const char *to)
{
	size_t pl = strlen(prefix);
	for (size_t i = 0; i < w->ndirs;) {
		char *p = w->dirs[i].path;
		if (strncmp(p, prefix, pl) != 0 || (p[pl] != '\0' && p[pl] != '/')) {
			i++;
			continue;
		}
		if (!to) {
			inotify_rm_watch(w->fd, w->dirs[i].wd);
			dir_forget(w, i);
			continue;
		}
		size_t n = strlen(to) + strlen(p + pl);
		char *np = n <= CP_FS_PATH_MAX ? malloc(n + 1) : NULL;
		if (!np) {
			inotify_rm_watch(w->fd, w->dirs[i].wd);
			dir_forget(w, i);
			w->overflow = true;
			continue;
		}
		snprintf(np, n + 1, "%s%s", to, p + pl);
		free(p);
		w->dirs[i].path = np;
		i++;
	}
}

/* A MOVED_FROM waiting for its MOVED_TO, which comes next in the queue when the move stays
 * inside the watched tree. */
struct pending_move {
	uint32_t cookie;
	char *path;
	bool is_dir;
};

static void pending_as_delete(struct watch *w, struct pending_move *pm)
{
	if (!pm->path)
		return;
	queue(w, CP_WATCH_DELETE, pm->path, NULL, pm->is_dir);
	if (pm->is_dir)
		retarget(w, pm->path, NULL);
	free(pm->path);
	pm->path = NULL;
}

static void one_event(struct watch *w, const struct inotify_event *ev, struct pending_move *pm)
{
	if (ev->mask & IN_Q_OVERFLOW) {
		w->overflow = true;
		return;
	}
	bool is_dir = (ev->mask & IN_ISDIR) != 0;
	if (pm->path && !((ev->mask & IN_MOVED_TO) && ev->cookie == pm->cookie))
		pending_as_delete(w, pm);
	struct wdir *d = dir_by_wd(w, ev->wd);
	if (!d)
		return;
	if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
		if (ev->wd == w->root_wd) {
			/* The watched folder itself is gone (or moved: its paths mean nothing now). */
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
				queue(w, CP_WATCH_DELETE, d->path, NULL, !w->on_file);
			w->ended = true;
		} else if (ev->mask & IN_IGNORED) {
			dir_forget(w, (size_t)(d - w->dirs));
		}
		return;
	}
	if (w->on_file) {
		if ((ev->mask & IN_MODIFY) && w->last_mod_wd != ev->wd) {
			queue(w, CP_WATCH_MODIFY, d->path, NULL, false);
			w->last_mod_wd = ev->wd;
		}
		return;
	}
	if (!ev->len)
		return;
	_cleanup_free_ char *path = join(d->path, ev->name);
	if (!path) {
		w->overflow = true;
		return;
	}
	if (ev->mask & IN_MODIFY) {
		if (w->last_mod_wd == ev->wd && !strcmp(w->last_mod_name, ev->name))
			return;
		queue(w, CP_WATCH_MODIFY, path, NULL, is_dir);
		w->last_mod_wd = ev->wd;
		snprintf(w->last_mod_name, sizeof(w->last_mod_name), "%s", ev->name);
	} else if (ev->mask & IN_CREATE) {
		if (!scanned_take(w, path))
			queue(w, CP_WATCH_CREATE, path, NULL, is_dir);
		if (is_dir && w->recursive)
			add_tree(w, open_dir_at(path), path, true, 1);
	} else if (ev->mask & IN_DELETE) {
		queue(w, CP_WATCH_DELETE, path, NULL, is_dir);
	} else if (ev->mask & IN_MOVED_FROM) {
		pm->cookie = ev->cookie;
		pm->path = steal_ptr(path);
		pm->is_dir = is_dir;
	} else if (ev->mask & IN_MOVED_TO) {
		if (pm->path && pm->cookie == ev->cookie) {
			queue(w, CP_WATCH_MOVE, path, pm->path, is_dir);
			if (is_dir && w->recursive)
				retarget(w, pm->path, path);
			free(pm->path);
			pm->path = NULL;
		} else {
			/* Moved in from outside the tree. */
			queue(w, CP_WATCH_CREATE, path, NULL, is_dir);
			if (is_dir && w->recursive)
				add_tree(w, open_dir_at(path), path, false, 1);
		}
	}
}

static void watch_end(struct watch *w)
{
	flush(w);
	uint32_t chan = w->chan;
	watch_release(w);
	if (cp_empty_encode(agent_writer(), CP_OK, chan) == 0)
		agent_send_frame();
}

void watch_event(size_t index, uint32_t events)
{
	(void)events;
	if (index >= MAX_WATCHES || !watches[index].used)
		return;
	struct watch *w = &watches[index];
	if (w->credit < MIN_CREDIT) {
		/* Stop reading until the client takes more: the kernel queues meanwhile, and says
		 * when its queue overflowed. */
		set_reading(w, false);
		return;
	}
	char buf[READ_BUF] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(w->fd, buf, sizeof(buf));
	if (n <= 0)
		return;
	struct pending_move pm = { 0 };
	for (char *p = buf; p < buf + n;) {
		const struct inotify_event *ev = (const struct inotify_event *)p;
		one_event(w, ev, &pm);
		p += sizeof(*ev) + ev->len;
	}
	/* A MOVED_TO that did not come in this read is taken as a move out of the tree. */
	pending_as_delete(w, &pm);
	if (w->ended)
		watch_end(w);
	else
		flush(w);
}

void watch_request(uint32_t chan, const uint8_t *payload, size_t len)
{
	struct cp_watch m;
	if (cp_watch_decode(payload, len, &m) < 0) {
		agent_send_error(chan, EBADMSG, "malformed WATCH request");
		return;
	}
	struct watch *w = NULL;
	for (size_t i = 0; i < MAX_WATCHES && !w; i++)
		if (!watches[i].used)
			w = &watches[i];
	if (watch_by_chan(chan)) {
		agent_send_error(chan, EBADMSG, "channel already in use");
	} else if (!w) {
		agent_send_error(chan, EAGAIN, "too many watches in this sandbox (64)");
	} else {
		memset(w, 0, sizeof(*w));
		cp_writer_init(&w->out);
		w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		struct stat st;
		char msg[160];
		/* Resolved as a process of the sandbox would (links followed, never out of its root,
		 * no magic links), as the filesystem API resolves it. */
		int pfd = -1;
		if (w->fd >= 0 && m.path[0] != '/')
			errno = EINVAL;
		else if (w->fd >= 0)
			pfd = fs_open_in_root(m.path, O_PATH);
		if (w->fd < 0) {
			snprintf(msg, sizeof(msg), "watch: inotify: %s", strerror(errno));
			agent_send_error(chan, errno, msg);
			watch_release(w);
		} else if (pfd < 0 || fstat(pfd, &st) < 0) {
			snprintf(msg, sizeof(msg), "watch '%.100s': %s", m.path, strerror(errno));
			agent_send_error(chan, errno, msg);
			if (pfd >= 0)
				close(pfd);
			watch_release(w);
		} else {
			w->used = true;
			w->chan = chan;
			w->credit = CP_INITIAL_WINDOW;
			w->recursive = (m.flags & CP_WATCH_RECURSIVE) != 0;
			w->on_file = !S_ISDIR(st.st_mode);
			w->last_mod_wd = -1;
			errno = 0;
			if (w->on_file) {
				int wd = watch_fd(w->fd, pfd, FILE_MASK);
				char *copy = strdup(m.path);
				w->dirs = malloc(sizeof(*w->dirs));
				if (wd >= 0 && copy && w->dirs) {
					w->dirs[0] = (struct wdir){ .wd = wd, .path = copy };
					w->ndirs = 1;
				} else {
					free(copy);
				}
				close(pfd);
			} else {
				/* The O_PATH descriptor cannot be listed: the folder it names is opened
				 * again through it, which walks nothing. */
				char self[32];
				snprintf(self, sizeof(self), "/proc/self/fd/%d", pfd);
				int dfd = open(self, O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
				close(pfd);
				add_tree(w, dfd, m.path, false, 0);
			}
			if (w->ndirs == 0) {
				snprintf(msg, sizeof(msg), "watch '%.100s': %s", m.path, strerror(errno ? errno : ENOENT));
				agent_send_error(chan, errno ? errno : ENOENT, msg);
				watch_release(w);
			} else {
				w->root_wd = w->dirs[0].wd;
				struct cp_started s = { .pid = 0 };
				if (cp_started_encode(agent_writer(), chan, &s) == 0)
					agent_send_frame();
				/* A tree past the bound is watched in part, and said to be at once. */
				flush(w);
				set_reading(w, true);
			}
		}
	}
	cp_watch_free(&m);
}

bool watch_credit(const struct cp_header *h, const uint8_t *payload)
{
	struct watch *w = watch_by_chan(h->chan);
	if (!w)
		return false;
	struct cp_credit m;
	if (cp_credit_decode(payload, h->len, &m) == 0 && m.stream == CP_STREAM_STDOUT) {
		uint64_t c = w->credit + m.bytes;
		w->credit = c > CP_INITIAL_WINDOW * 4ull ? CP_INITIAL_WINDOW * 4ull : c;
		flush(w);
		if (w->credit >= MIN_CREDIT)
			set_reading(w, true);
	}
	return true;
}

bool watch_cancel(uint32_t chan)
{
	struct watch *w = watch_by_chan(chan);
	if (!w)
		return false;
	watch_release(w);
	agent_send_error(chan, ECANCELED, "watch cancelled");
	return true;
}
