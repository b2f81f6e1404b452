/* capsule-agent: PID 1 of a sandbox. It runs commands and file operations (fs.c) for the
 * shim, over the wire protocol on fd 3. Everything it resolves, it resolves inside the
 * sandbox, with the sandbox's view of the filesystem. */
#ifndef CAPSULE_AGENT_H
#define CAPSULE_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

#define AGENT_CONTROL_FD 3

/* Everything a command needs, settled before fork so the child does no allocation that
 * could fail half-way. */
struct spawn_request {
	char *const *argv;
	char **envp; /* final environment */
	const char *cwd;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	size_t ngroups;
	bool tty;
	/* A terminal the command gets as its controlling tty and stdin, stdout and stderr, with no
	 * streams back to the agent (the display's console, vm_console.c); NULL otherwise. */
	const char *console;
	bool stdin_open;
	bool detach;
	uint16_t rows, cols;
	const uint8_t *seccomp_bpf;
	size_t seccomp_len;
	uint64_t cap_keep;
	/* An OCI process's own (proto.h, struct cp_exec): limits set before exec, and a second
	 * filter installed above the first. */
	const struct cp_rlimit *rlimits;
	size_t nrlimits;
	const uint8_t *seccomp2_bpf;
	size_t seccomp2_len;
	uint64_t cap_inheritable, cap_ambient; /* subsets of cap_keep */
	bool caps_explicit; /* the request named the set: a user other than root keeps it too */
	int umask;         /* -1: 022 */
	int oom_score_adj; /* 0 to 1000 */
	bool new_privs;    /* no no_new_privs: the filters go on while the agent's CAP_SYS_ADMIN is held */
	/* Descriptors the command gets as 3, 4, ... (EXEC's, passed by the client: --preserve-fds),
	 * the agent's own numbers; the agent keeps them and closes them after the spawn. */
	const int *fds;
	size_t nfds;
};

struct spawn_result {
	pid_t pid;
	int stdin_fd;  /* -1 when stdin is closed */
	int stdout_fd; /* the pty master with tty */
	int stderr_fd; /* -1 with tty or detach */
};

/* Resolve USER ("name", "uid", "name:group", "uid:gid") against the sandbox's own /etc/passwd
 * and /etc/group: never through NSS, which would load the sandbox's libraries into the agent.
 * Fills uid/gid, supplementary groups (malloc'd) and the home folder (malloc'd). */
int agent_resolve_user(const char *user, uid_t *uid, gid_t *gid, gid_t **groups, size_t *ngroups, char **home,
		       char *errbuf, size_t errlen);

/* The login shell of UID in the sandbox's /etc/passwd (an absolute path), into OUT; -ENOENT
 * when it has none. */
int agent_user_shell(uid_t uid, char *out, size_t size);
/* Once INIT is answered, the first command's set-up is done ahead of it (proc.c): from the
 * loop's next turn, with INIT's answer out, the user files are read; at the first turn whose
 * EPFD has nothing waiting and no file request is BUSY, the names a start walks are looked
 * up. A pooled sandbox's first command, right after its take, finds both done. */
void agent_first_command_prepare_after_answer(void);
void agent_first_command_prepare(int epfd, bool busy);

/* The gid of group NAME in the sandbox's group file GROUP_FILE (read as agent_resolve_user reads
 * it); -ENOENT when it has none. */
int agent_group_gid(const char *group_file, const char *name, gid_t *gid);

/* Fork and exec. On failure returns -errno with a one-line reason in errbuf (the command
 * was not found, could not be executed, the working directory does not exist, ...). */
int agent_spawn(const struct spawn_request *req, struct spawn_result *res, char *errbuf, size_t errlen);

/* Start the thread that commands with the sandbox's own filter BPF and capabilities KEEP are
 * cloned from (proc.c, "the spawner thread"), ahead of the first command: done once the INIT
 * is answered, so that a sandbox's first command, which a pooled one runs right after its
 * take, does not wait for the filter's install. The first command starts it otherwise. */
void agent_spawner_prepare(const uint8_t *bpf, size_t bpf_len, uint64_t keep);

/* Sending to the shim (agent.c): frames are written whole, waiting for room if need be.
 * Small frames are corked until agent_flush, which the loop calls before it waits. */
struct cp_writer *agent_writer(void);
void agent_send_frame(void); /* the frame encoded in agent_writer() */
void agent_send_raw(const void *buf, size_t len);
void agent_flush(void);
void agent_send_error(uint32_t chan, int errnum, const char *msg);
void agent_send_credit(uint32_t chan, uint32_t stream, uint32_t bytes);

/* The low byte of an epoll key past the main loop's own roles (agent.c): which module's fd it
 * is, the module's index above it. One list, so that no two modules share a value (two did:
 * a vm's DNS socket's events went to the file streams). */
enum {
	AGENT_ROLE_FWD = 0x40,
	AGENT_ROLE_WATCH,
	AGENT_ROLE_FS,
	AGENT_ROLE_DNS,
	AGENT_ROLE_PORTS,
};

/* The filesystem API (fs.c). The fs_* frame handlers return false when CHAN is not one of
 * theirs. fs_pump sends what the open streams have credit for and returns true while there
 * is more it could send at once. */
int fs_init(int epfd);
/* DIRECT_OK: descriptors can come on the shim's channel (a container), so a request that
 * asks for a direct stream (CP_FS_DIRECT) may get one. */
void fs_request(uint32_t chan, const uint8_t *payload, size_t len, bool direct_ok);
/* The shim's DIRECT for CHAN: SOCK, the stream's socket (now fs.c's), or -1 for frames. */
void fs_direct(uint32_t chan, int sock);
bool fs_data(const struct cp_header *h, const uint8_t *payload);
bool fs_credit(const struct cp_header *h, const uint8_t *payload);
bool fs_cancel(uint32_t chan);
bool fs_pump(void);
/* A direct stream's socket is ready: its epoll events, keyed (index << 8) | AGENT_ROLE_FS. */
void fs_event(size_t index, uint32_t events);
/* After the loop's flush, before it waits: let go of files replaced by writes whose OK has
 * been sent (freeing a large file's pages is then off the client's wait). */
void fs_release(void);
/* PATH (absolute in the sandbox) opened with FLAGS, resolved from the sandbox's root with
 * openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS): what the filesystem API and watches use. */
int fs_open_in_root(const char *path, uint64_t flags);

/* Forwarded connections of a vm (fwd.c): the shim's FWD_CONNECT and FWD_CLOSE, the DATA and
 * CREDIT of their channels (false: not one of theirs), and their sockets' epoll events,
 * keyed (index << 8) | AGENT_ROLE_FWD. */
void fwd_init(int epfd);
void fwd_connect(uint32_t chan, const uint8_t *payload, size_t len);
void fwd_close(uint32_t chan);
bool fwd_data(const struct cp_header *h, const uint8_t *payload);
bool fwd_credit(const struct cp_header *h, const uint8_t *payload);
void fwd_event(size_t index, uint32_t events);

/* Watches of a folder's changes (watch.c): WATCH requests, the CREDIT and SIGNAL of their
 * channels (false: not one of theirs), and their inotify fds' epoll events, keyed
 * (index << 8) | AGENT_ROLE_WATCH. */
void watch_init(int epfd);
void watch_request(uint32_t chan, const uint8_t *payload, size_t len);
bool watch_credit(const struct cp_header *h, const uint8_t *payload);
bool watch_cancel(uint32_t chan);
void watch_event(size_t index, uint32_t events);

/* A vm's DNS proxy, the guest's half (vm_dns.c): with capsule.dns=proxy, a UDP socket on
 * VM_DNS_PROXY_ADDR:53 whose datagrams go to the shim as DNS_QUERY (its epoll key is
 * AGENT_ROLE_DNS), and the shim's EGRESS: set elements, then the answer; on a channel, the
 * quota's use. */
#define VM_DNS_PROXY_ADDR "127.0.0.53"
bool vm_dns_wanted(void);
void vm_dns_init(int epfd);
void vm_dns_event(void);
void vm_dns_egress(const struct cp_header *h, const uint8_t *payload);

/* A vm's listening TCP ports (vm_ports.c): with capsule.ports=report, a timer on whose ticks
 * the guest's TCP tables are read and VM_LISTENING is sent when the set changed (and every
 * few seconds); the shim's VM_LISTENING, the ports the pod's other vms hold, each listened on
 * on the guest's loopback and relayed to the gateway's. Their epoll keys are
 * (index << 8) | AGENT_ROLE_PORTS. */
void vm_ports_init(int epfd);
void vm_ports_event(size_t index, uint32_t events);
void vm_ports_peers(const uint8_t *payload, size_t len);

/* vm isolation (vm_boot.c). agent_vm_boot does nothing in a container; as the /init of a
 * guest it loads modules, makes the port fd 3 and moves into the sandbox's root. agent_exit
 * ends the agent: in a guest, by powering it off. */
int agent_vm_boot(void);
/* vm_net.c: with capsule.net=full on the kernel command line, configure the NIC and bind
 * resolv.conf over NEWROOT's; -1 with a reason in WHY. */
int vm_net_setup(const char *newroot, char *why, size_t whylen);
bool agent_in_vm(void);
/* The device node of the first entry of sysfs folder DIR whose file ATTR is the line WANT,
 * waited for up to TIMEOUT_MS (vm_boot.c). */
bool vm_sysfs_dev_wait(const char *dir, const char *attr, const char *want, char *dev, size_t size,
		       unsigned timeout_ms);
/* The value of KEY=VALUE on the kernel's command line (vm_boot.c), into OUT. */
bool agent_cmdline_get(const char *key, char *out, size_t size);
/* vm_disk.c: mount the root disk the shim attached (capsule.disk= on the kernel command line)
 * at ROOT and grow it to the disk's size. 0: there is none; 1: mounted, *HOST_SHARES says
 * whether the host's /usr etc. go over it; -errno with WHY on failure. */
int agent_vm_disk_root(const char *root, bool *host_shares, char *why, size_t why_size);
/* The display (vm_display.c): with capsule.display=1 on the kernel command line, its device
 * nodes in the sandbox's /dev at DEV, owned by the groups of the sandbox's GROUP_FILE. */
void vm_display_dev(const char *dev, const char *group_file);
/* The display's console (vm_console.c): with capsule.display=1, a shell on /dev/tty1, which
 * the kernel's framebuffer console draws on the screen, confined as a command is (INIT's
 * seccomp filter, capabilities and environment) and run as capsule.console_user=, restarted
 * when it exits. vm_console_start after INIT; vm_console_reaped takes the exit of PID when it
 * is the console's (true); vm_console_timeout_ms is the wait until a restart is due (-1: none),
 * vm_console_tick makes it; vm_console_stop at shutdown ends it for good. */
void vm_console_start(const struct cp_init *init);
bool vm_console_reaped(pid_t pid);
int vm_console_timeout_ms(void);
void vm_console_tick(void);
void vm_console_stop(void);
_Noreturn void agent_exit(int code);
/* SIG to every process of the sandbox (agent.c says which those are). */
void agent_signal_all(int sig);

/* vm mounts (vm_mounts.c): vm_mounts_boot mounts the host folders' share out of the
 * sandbox's sight, before the agent moves into the root; vm_mount_request answers
 * VM_MOUNT and VM_UNMOUNT from the shim. */
void vm_mounts_boot(void);
void vm_mount_request(const struct cp_header *h, const uint8_t *payload);

#endif
