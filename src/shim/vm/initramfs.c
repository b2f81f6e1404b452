/* The guest's initramfs, written by us as a newc cpio (the kernel's own format, no tool
 * needed): the static agent as /capsule-agent (the kernel's rdinit=), /dev/console so that PID 1 starts with stdio, and the
 * kernel modules the agent needs as /modules/<group>/NNN-name.ko, numbered in load order (each
 * after everything it depends on, from modules.dep). Debian builds virtio, 9p and overlayfs as
 * modules, so without them the guest could not reach its channel or its root. */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "util.h"
#include "vm.h"
#include "vmnet.h"
#include "vm_store.h"

/* What the agent loads, by module name, in groups; dependencies come from modules.dep. The
 * agent loads "core" at every boot, "pci" where the machine has a PCI bus (a q35 machine from
 * extra_qemu_args), and the other groups only where the kernel command line's
 * capsule.modules= names them (vm_module_groups): each module costs tens of milliseconds
 * to load under TCG, so a guest loads only the drivers of the devices it was given.
 * virtio_mmio is the microvm transport; virtio_balloon reports the guest's free pages, so
 * that QEMU gives them back to the host. */
static const struct wanted_module {
	const char *group, *name;
} wanted_modules[] = {
	{ "core", "virtio_mmio" }, { "core", "virtio_console" }, { "core", "9pnet_virtio" },
	{ "core", "9p" }, { "core", "virtio_balloon" },
	{ "pci", "virtio_pci" },
	/* every vm's root disk (disk.c); ext4's checksums ask the crypto API for crc32c */
	{ "core", "virtio_blk" }, { "core", "crc32c_generic" }, { "core", "ext4" },
	{ "net", "virtio_net" }, /* --network full: the NIC of QEMU's user-mode network */
	{ "display", "virtio_gpu" }, { "display", "virtio_input" }, { "display", "evdev" },
};

/* One line a group: each names the setting that gives the machine the group's devices. */
void vm_module_groups(const struct capsule_config *cfg, char *buf, size_t size)
{
	size_t n = 0;
	buf[0] = '\0';
#define GROUP_IF(cond, name) \
	if ((cond) && n < size) \
		n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? "," : "", name)
	GROUP_IF(vm_net_nic(cfg), "net");
	GROUP_IF(cfg->display, "display");
#undef GROUP_IF
}

#define MAX_MODULES 128

struct modlist {
	char *paths[MAX_MODULES]; /* relative to /lib/modules/<ver>, in load order */
	const char *groups[MAX_MODULES];
	size_t n;
};

/* The line of modules.dep for module NAME (matched on the file's base name, any
 * compression suffix), as "path: dep dep ..." in *LINE (malloc'd). */
static int moddep_line(const char *dep, size_t len, const char *name, char **line)
{
	size_t nl = strlen(name);
	for (const char *p = dep; p < dep + len;) {
		const char *end = memchr(p, '\n', (size_t)(dep + len - p));
		if (!end)
			end = dep + len;
		const char *colon = memchr(p, ':', (size_t)(end - p));
		if (colon) {
			const char *base = colon;
			while (base > p && base[-1] != '/')
				base--;
			/* name.ko, name.ko.xz, name.ko.zst; modules.dep spells '-' where a name may say '_' */
			bool same = (size_t)(colon - base) > nl + 2;
			for (size_t i = 0; same && i < nl; i++) {
				char a = base[i] == '-' ? '_' : base[i], b = name[i] == '-' ? '_' : name[i];
				same = a == b;
			}
			if (same && !strncmp(base + nl, ".ko", 3) && (base[nl + 3] == ':' || base[nl + 3] == '.')) {
				*line = strndup(p, (size_t)(end - p));
				return *line ? 0 : -ENOMEM;
			}
		}
		p = end + 1;
	}
	return -ENOENT;
}

/* Whether PATH is loaded by the time GROUP's modules are: in core (always loaded first) or
 * in GROUP itself. A module two other groups need is in both: either may be loaded alone. */
static bool modlist_has(const struct modlist *m, const char *group, const char *path, size_t len)
{
	for (size_t i = 0; i < m->n; i++)
		if ((!strcmp(m->groups[i], "core") || !strcmp(m->groups[i], group)) && strlen(m->paths[i]) == len &&
		    !strncmp(m->paths[i], path, len))
			return true;
	return false;
}

/* Depth first: a module goes in after all it depends on. */
static int modlist_add_path(struct modlist *m, const char *group, const char *dep, size_t len, const char *path,
			    size_t plen, int depth, capsule_error *err)
{
	if (modlist_has(m, group, path, plen))
		return 0;
	if (depth > 16)
		return cap_err_plain(err, ELOOP, "modules.dep: dependencies of '%.*s' nest too deep", (int)plen, path);
	/* Find PATH's own line to recurse into its dependencies. */
	_cleanup_free_ char *line = NULL;
	for (const char *p = dep; p < dep + len;) {
		const char *end = memchr(p, '\n', (size_t)(dep + len - p));
		if (!end)
			end = dep + len;
		if ((size_t)(end - p) > plen && !strncmp(p, path, plen) && p[plen] == ':') {
			line = strndup(p, (size_t)(end - p));
			break;
		}
		p = end + 1;
	}
	if (!line)
		return cap_err_plain(err, ENOENT, "modules.dep has no line for '%.*s'", (int)plen, path);
	char *save = NULL;
	char *deps = strchr(line, ':') + 1;
	for (char *d = strtok_r(deps, " \t", &save); d; d = strtok_r(NULL, " \t", &save)) {
		int r = modlist_add_path(m, group, dep, len, d, strlen(d), depth + 1, err);
		if (r < 0)
			return r;
	}
	if (m->n >= MAX_MODULES)
		return cap_err_plain(err, E2BIG, "the guest needs more than %d modules", MAX_MODULES);
	if (!(m->paths[m->n] = strndup(path, plen)))
		return cap_err(err, ENOMEM, "module list");
	m->groups[m->n++] = group;
	return 0;
}

static int modlist_resolve(const char *version, struct modlist *m, capsule_error *err)
{
	char dep_path[PATH_MAX];
	snprintf(dep_path, sizeof(dep_path), "/lib/modules/%s/modules.dep", version);
	_cleanup_free_ char *dep = NULL;
	size_t len;
	int r = read_file_at(AT_FDCWD, dep_path, 64u << 20, &dep, &len);
	if (r < 0)
		return cap_err(err, -r, "reading '%s'", dep_path);
	for (size_t i = 0; i < ARRAY_SIZE(wanted_modules); i++) {
		_cleanup_free_ char *line = NULL;
		r = moddep_line(dep, len, wanted_modules[i].name, &line);
		if (r == -ENOENT) {
			/* Built in (=y) needs no module; the agent finds out at mount time if not. */
			continue;
		}
		if (r < 0)
			return cap_err(err, -r, "reading '%s'", dep_path);
		if ((r = modlist_add_path(m, wanted_modules[i].group, dep, len, line, (size_t)(strchr(line, ':') - line), 0,
					  err)) < 0)
			return r;
	}
	return 0;
}

static void modlist_free(struct modlist *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->paths[i]);
	m->n = 0;
}

/* ---- newc cpio ---------------------------------------------------------------------------- */

struct cpio {
	int fd;
	uint32_t ino;
	uint64_t off;
};

static int cpio_pad(struct cpio *c)
{
	static const char zeros[4];
	size_t pad = (4 - (c->off & 3)) & 3;
	c->off += pad;
	return pad ? write_all(c->fd, zeros, pad) : 0;
}

static int cpio_header(struct cpio *c, const char *name, mode_t mode, uint64_t size, unsigned rmaj, unsigned rmin)
{
	char hdr[111];
	size_t namesize = strlen(name) + 1;
	snprintf(hdr, sizeof(hdr), "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ++c->ino,
		 (unsigned)mode, 0u, 0u, S_ISDIR(mode) ? 2u : 1u, 0u, (unsigned)size, 0u, 0u, rmaj, rmin,
		 (unsigned)namesize, 0u);
	int r = write_all(c->fd, hdr, 110);
	if (r == 0)
		r = write_all(c->fd, name, namesize);
	c->off += 110 + namesize;
	return r < 0 ? r : cpio_pad(c);
}

static int cpio_file(struct cpio *c, const char *name, const char *host_path, mode_t mode)
{
	_cleanup_close_ int fd = open(host_path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size > UINT32_MAX)
		return -EFBIG;
	int r = cpio_header(c, name, S_IFREG | mode, (uint64_t)st.st_size, 0, 0);
	char buf[65536];
	uint64_t left = (uint64_t)st.st_size;
	while (r == 0 && left > 0) {
		ssize_t n = read(fd, buf, left < sizeof(buf) ? left : sizeof(buf));
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		r = write_all(c->fd, buf, (size_t)n);
		left -= (uint64_t)n;
		c->off += (uint64_t)n;
	}
	return r < 0 ? r : cpio_pad(c);
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* FNV-1a over the module list and the agent's bytes: a cache key, not a security check
 * (whoever can write $CAPSULE_HOME can replace the cache anyway). */
static int file_digest(const char *path, uint64_t *out)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < ARRAY_SIZE(wanted_modules); i++) {
		h = fnv1a(h, (const unsigned char *)wanted_modules[i].group, strlen(wanted_modules[i].group) + 1);
		h = fnv1a(h, (const unsigned char *)wanted_modules[i].name, strlen(wanted_modules[i].name) + 1);
	}
	unsigned char buf[65536];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		h = fnv1a(h, buf, (size_t)n);
	if (n < 0)
		return -errno;
	*out = h;
	return 0;
}

static int write_initramfs(int fd, const char *version, const char *agent, const struct modlist *m, capsule_error *err)
{
	struct cpio c = { .fd = fd };
	int r = cpio_header(&c, "dev", S_IFDIR | 0755, 0, 0, 0);
	if (r == 0)
		r = cpio_header(&c, "dev/console", S_IFCHR | 0600, 0, 5, 1);
	if (r == 0 && m->n)
		r = cpio_header(&c, "modules", S_IFDIR | 0755, 0, 0, 0);
	if (r == 0 && (r = cpio_file(&c, VM_INIT_NAME, agent, 0755)) < 0)
		return cap_err(err, -r, "adding '%s' to the initramfs", agent);
	for (size_t i = 0; r == 0 && i < m->n; i++) {
		char host[PATH_MAX], name[256];
		bool first_of_group = true;
		for (size_t j = 0; j < i; j++)
			first_of_group &= strcmp(m->groups[j], m->groups[i]) != 0;
		if (first_of_group) {
			snprintf(name, sizeof(name), "modules/%s", m->groups[i]);
			if ((r = cpio_header(&c, name, S_IFDIR | 0755, 0, 0, 0)) < 0)
				break;
		}
		const char *base = strrchr(m->paths[i], '/');
		base = base ? base + 1 : m->paths[i];
		snprintf(host, sizeof(host), "/lib/modules/%s/%s", version, m->paths[i]);
		snprintf(name, sizeof(name), "modules/%s/%03zu-%s", m->groups[i], i, base);
		if ((r = cpio_file(&c, name, host, 0644)) < 0)
			return cap_err(err, -r, "adding '%s' to the initramfs", host);
	}
	if (r == 0)
		r = cpio_header(&c, "TRAILER!!!", 0, 0, 0, 0);
	return r < 0 ? cap_err(err, -r, "writing the initramfs") : 0;
}

/* Whether the ELF file at PATH names a program interpreter (is dynamically linked). */
static int elf_is_dynamic(const char *path, bool *dynamic)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	Elf64_Ehdr eh;
	if (fd < 0)
		return -errno;
	if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 256)
		return -ENOEXEC;
	*dynamic = false;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (uint64_t)i * sizeof(ph))) != (ssize_t)sizeof(ph))
			return -ENOEXEC;
		if (ph.p_type == PT_INTERP)
			*dynamic = true;
	}
	return 0;
}

int vm_initramfs(const struct vm_kernel *k, const char *agent, char **path, capsule_error *err)
{
	const char *version = k->version;
	/* The initramfs holds the agent and modules, no libraries: a dynamically linked agent
	 * (a sanitizer build's) could not start as the guest's init, and the boot would only
	 * time out. */
	bool dynamic = false;
	int r = elf_is_dynamic(agent, &dynamic);
	if (r < 0)
		return cap_err(err, -r, "reading '%s'", agent);
	if (dynamic)
		return cap_err_plain(err, ENOEXEC,
				     "vm isolation needs a statically linked capsule-agent; '%s' is dynamically linked "
				     "(a sanitizer build?)",
				     agent);
	uint64_t digest = 0;
	r = file_digest(agent, &digest);
	if (r < 0)
		return cap_err(err, -r, "reading '%s'", agent);
	_cleanup_close_ int dir = -1;
	if ((r = home_subdir_open("vm", &dir, err)) < 0)
		return r;
	char name[NAME_MAX];
	/* A builtin kernel's initramfs has no modules: never the same file as a modular one's. */
	snprintf(name, sizeof(name), "initramfs-%s%s-%016llx.cpio", version, k->builtin ? "-builtin" : "",
		 (unsigned long long)digest);
	char full[PATH_MAX];
	snprintf(full, sizeof(full), "%s/vm/%s", capsule_home(), name);
	if (!(*path = strdup(full)))
		return cap_err(err, ENOMEM, "initramfs path");
	/* Pinned until the vm stops for good: a revert boots again from it. */
	if (vm_store_pin(dir, name) == 0)
		return 0;

	struct modlist m = { 0 };
	r = k->builtin ? 0 : modlist_resolve(version, &m, err);
	char tmp[NAME_MAX + 32];
	snprintf(tmp, sizeof(tmp), ".tmp-%s-%d", name, (int)getpid());
	int fd = r < 0 ? -1 : openat(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (r == 0 && fd < 0)
		r = cap_err(err, errno, "creating '%s/vm/%s'", capsule_home(), tmp);
	if (r == 0)
		r = write_initramfs(fd, version, agent, &m, err);
	if (r == 0 && fsync(fd) < 0)
		r = cap_err(err, errno, "writing '%s/vm/%s'", capsule_home(), tmp);
	if (fd >= 0)
		close(fd);
	/* Two starts may build it at once: both write their own file, the last rename wins, and
	 * either is whole. */
	if (r == 0 && renameat(dir, tmp, dir, name) < 0)
		r = cap_err(err, errno, "renaming the initramfs into '%s'", full);
	if (r == 0 && (r = vm_store_pin(dir, name)) < 0)
		cap_err(err, -r, "initramfs '%s'", full);
	if (r < 0) {
		unlinkat(dir, tmp, 0);
		free(*path);
		*path = NULL;
	}
	modlist_free(&m);
	return r;
}

/* ---- the kernel ----------------------------------------------------------------------------- */

/* "6.1.0-56-amd64" > "6.1.0-9-amd64": numbers compare as numbers. */
static int version_cmp(const char *a, const char *b)
{
	while (*a && *b) {
		if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
			unsigned long x = strtoul(a, (char **)&a, 10), y = strtoul(b, (char **)&b, 10);
			if (x != y)
				return x < y ? -1 : 1;
			continue;
		}
		if (*a != *b)
			return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
		a++, b++;
	}
	return *a ? 1 : *b ? -1 : 0;
}

void vm_kernel_free(struct vm_kernel *k)
{
	free(k->path);
	free(k->version);
	k->path = k->version = NULL;
}

static int kernel_set(struct vm_kernel *k, const char *path, const char *version, bool builtin, capsule_error *err)
{
	k->path = strdup(path);
	k->version = strdup(version);
	k->builtin = builtin;
	if (!k->path || !k->version) {
		vm_kernel_free(k);
		return cap_err(err, ENOMEM, "kernel path");
	}
	return 0;
}

/* An ELF kernel with every driver built in: capsule's own, or one given by path. */
static int kernel_builtin(struct vm_kernel *k, const char *path, capsule_error *err)
{
	char release[128];
	int r = vm_kernel_elf_release(path, release, sizeof(release));
	if (r == -ENOEXEC)
		return cap_err_plain(err, ENOEXEC,
				     "kernel '%s' is neither named vmlinuz-<version> nor an x86-64 ELF kernel with a PVH "
				     "entry and a version banner",
				     path);
	if (r < 0)
		return cap_err(err, -r, "kernel '%s'", path);
	return kernel_set(k, path, release, true, err);
}

int vm_find_kernel(struct vm_kernel *k, capsule_error *err)
{
	memset(k, 0, sizeof(*k));
	const char *env = getenv("CAPSULE_VM_KERNEL");
	if (env && *env) {
		/* CAPSULE_VM_KERNEL=/path/vmlinuz-<ver>: Debian's layout, its version from the name
		 * and its modules from /lib/modules/<ver>; any other name must be a builtin ELF. */
		const char *base = strrchr(env, '/');
		base = base ? base + 1 : env;
		if (strncmp(base, "vmlinuz-", 8) != 0)
			return kernel_builtin(k, env, err);
		if (access(env, R_OK) < 0)
			return cap_err(err, errno, "kernel '%s' (CAPSULE_VM_KERNEL)", env);
		return kernel_set(k, env, base + 8, false, err);
	}
	/* capsule's own kernel where the build made one (scripts/build-guest-kernel): smaller and
	 * faster to boot than Debian's, which stays the fallback. */
	_cleanup_free_ char *ours = NULL;
	capsule_error ignored = { 0 };
	if (find_helper(VM_OWN_KERNEL_NAME, &ours, &ignored) == 0)
		return kernel_builtin(k, ours, err);

	DIR *d = opendir("/boot");
	char best[NAME_MAX + 1] = "";
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, "vmlinuz-", 8) != 0)
			continue;
		const char *ver = de->d_name + 8;
		char moddir[PATH_MAX];
		snprintf(moddir, sizeof(moddir), "/lib/modules/%s/modules.dep", ver);
		/* A kernel whose modules are gone (removed package, half an upgrade) cannot boot
		 * our guest: it needs virtio and 9p from them. */
		if (access(moddir, R_OK) < 0)
			continue;
		if (!best[0] || version_cmp(ver, best) > 0)
			snprintf(best, sizeof(best), "%s", ver);
	}
	if (d)
		closedir(d);
	if (!best[0])
		return cap_err_plain(err, ENOENT,
				     "no kernel for vm isolation: no " VM_OWN_KERNEL_NAME " (make builds it from "
				     "linux-source-6.1) and no /boot/vmlinuz-<version> with /lib/modules/<version> "
				     "(install linux-image-amd64)");
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "/boot/vmlinuz-%s", best);
	if (access(path, R_OK) < 0)
		return cap_err(err, errno, "kernel '%s'", path);
	return kernel_set(k, path, best, false, err);
}
