/* The guest kernel as an uncompressed ELF with a PVH entry point.
 *
 * Debian ships a bzImage whose payload is xz-compressed. Booted as it is, the kernel's own
 * decompressor runs first, inside the guest: under TCG that is most of a second of emulated
 * xz per boot (7.0 s against 2.6 s to a bare init, measured; docs/performance.md). QEMU can
 * instead load the ELF vmlinux inside it and jump to its PVH entry (the Xen PHYS32_ENTRY note
 * that CONFIG_PVH kernels carry), with no decompression and no real-mode setup. So the shim
 * unpacks the payload once per kernel with the host's own decompressor, checks that the
 * result is a whole ELF with that note, and caches it beside the initramfs. Anything
 * unexpected (an old boot protocol, an unknown compression, no PVH note) falls back to the
 * bzImage: slower, never broken. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "syscalls.h"
#include "util.h"
#include "vm.h"
#include "vm_store.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define BZIMAGE_MIN_PROTOCOL 0x208 /* the first with payload_offset and payload_length */
#define MAX_KERNEL_PAYLOAD (256u << 20)

struct decompressor {
	const unsigned char magic[6];
	size_t magic_len;
	const char *const argv[5];
};

/* The kernel build appends the uncompressed size after the stream; --single-stream (xz) stops
 * before it, the others report it as trailing data after a complete output, which the ELF
 * check below then judges. */
static const struct decompressor decompressors[] = {
	{ { 0xfd, '7', 'z', 'X', 'Z', 0 }, 6, { "xz", "-dc", "--single-stream", NULL } },
	{ { 0x28, 0xb5, 0x2f, 0xfd }, 4, { "zstd", "-dcq", NULL } },
	{ { 0x1f, 0x8b }, 2, { "gzip", "-dc", NULL } },
};

/* The payload's place in a bzImage (Documentation/x86/boot.rst): after the real-mode setup
 * sectors, at payload_offset, payload_length bytes. */
static int bzimage_payload(int fd, const struct stat *st, off_t *offset, size_t *length)
{
	unsigned char hdr[0x250];
	if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		return -ENOEXEC;
	uint16_t protocol = (uint16_t)(hdr[0x206] | hdr[0x207] << 8);
	if (memcmp(hdr + 0x202, "HdrS", 4) != 0 || protocol < BZIMAGE_MIN_PROTOCOL)
		return -ENOEXEC;
	unsigned setup_sects = hdr[0x1f1] ? hdr[0x1f1] : 4;
	uint32_t off, len;
	memcpy(&off, hdr + 0x248, 4);
	memcpy(&len, hdr + 0x24c, 4);
	uint64_t start = (uint64_t)(setup_sects + 1) * 512 + le32toh(off);
	if (le32toh(len) == 0 || le32toh(len) > MAX_KERNEL_PAYLOAD || start + le32toh(len) > (uint64_t)st->st_size)
		return -ENOEXEC;
	*offset = (off_t)start;
	*length = le32toh(len);
	return 0;
}

/* Whether the ELF in FD (SIZE bytes) is whole (every program header and loaded segment within
 * the file: a truncated decompression fails here) and has a PVH entry note. */
static bool elf_is_pvh(int fd, off_t size)
{
	if (size < (off_t)sizeof(Elf64_Ehdr))
		return false;
	void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		return false;
	const unsigned char *base = map;
	const Elf64_Ehdr *eh = map;
	bool pvh = false, whole = true;
	uint64_t end = (uint64_t)size;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh->e_machine != EM_X86_64 || eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 ||
	    eh->e_phnum > 64 || eh->e_phoff > end || eh->e_phnum * sizeof(Elf64_Phdr) > end - eh->e_phoff) {
		munmap(map, (size_t)size);
		return false;
	}
	const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + eh->e_phoff);
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_offset > end || ph[i].p_filesz > end - ph[i].p_offset) {
			whole = false;
			break;
		}
		if (ph[i].p_type != PT_NOTE)
			continue;
		const unsigned char *n = base + ph[i].p_offset, *nend = n + ph[i].p_filesz;
		while ((size_t)(nend - n) >= sizeof(Elf64_Nhdr)) {
			Elf64_Nhdr nh;
			memcpy(&nh, n, sizeof(nh));
			size_t name_len = (nh.n_namesz + 3u) & ~3u, desc_len = (nh.n_descsz + 3u) & ~3u;
			if (name_len > (size_t)(nend - n) - sizeof(nh) ||
			    desc_len > (size_t)(nend - n) - sizeof(nh) - name_len)
				break;
			if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 && !memcmp(n + sizeof(nh), "Xen", 4))
				pvh = true;
			n += sizeof(nh) + name_len + desc_len;
		}
	}
	munmap(map, (size_t)size);
	return pvh && whole;
}

int vm_kernel_elf_release(const char *path, char *release, size_t size)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || !elf_is_pvh(fd, st.st_size))
		return -ENOEXEC;
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	/* linux_banner, in .rodata: "Linux version RELEASE (builder) ...". */
	static const char banner[] = "Linux version ";
	const char *at = memmem(map, (size_t)st.st_size, banner, sizeof(banner) - 1);
	int r = -ENOEXEC;
	if (at) {
		const char *v = at + sizeof(banner) - 1, *end = (const char *)map + st.st_size;
		size_t n = 0;
		while (v + n < end && n + 1 < size && v[n] > ' ' && v[n] < 0x7f && v[n] != '/')
			n++;
		if (n > 0 && v + n < end && v[n] == ' ') {
			memcpy(release, v, n);
			release[n] = '\0';
			r = 0;
		}
	}
	munmap(map, (size_t)st.st_size);
	return r;
}

/* Run DEC with the payload (a sealed memfd) as stdin and OUT as stdout; its exit status is
 * not the judge (see decompressors), the ELF check is. */
static int run_decompressor(const struct decompressor *dec, int in, int out)
{
	pid_t parent = getpid(), pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		shim_child_prepare(parent);
		int null = open("/dev/null", O_WRONLY);
		if (null < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(null, 2) < 0)
			_exit(127);
		if (fds_cloexec_from(3) < 0)
			_exit(127);
		execvp(dec->argv[0], (char *const *)dec->argv);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 127 ? -ENOENT : 0;
}

static int unpack_kernel(int kfd, const struct stat *st, int dir, const char *tmp)
{
	off_t off;
	size_t len;
	int r = bzimage_payload(kfd, st, &off, &len);
	if (r < 0)
		return r;
	unsigned char magic[6];
	if (pread(kfd, magic, sizeof(magic), off) != (ssize_t)sizeof(magic))
		return -ENOEXEC;
	const struct decompressor *dec = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(decompressors); i++)
		if (!memcmp(magic, decompressors[i].magic, decompressors[i].magic_len))
			dec = &decompressors[i];
	if (!dec)
		return -ENOEXEC;
	_cleanup_close_ int payload = memfd_create("capsule-kernel-payload", MFD_CLOEXEC);
	if (payload < 0)
		return -errno;
	/* Through a buffer: copy_file_range does not cross into a memfd (EXDEV). */
	unsigned char buf[65536];
	for (size_t done = 0; done < len;) {
		size_t want = len - done < sizeof(buf) ? len - done : sizeof(buf);
		ssize_t n = pread(kfd, buf, want, off + (off_t)done);
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		if ((r = write_all(payload, buf, (size_t)n)) < 0)
			return r;
		done += (size_t)n;
	}
	if (lseek(payload, 0, SEEK_SET) < 0)
		return -errno;
	_cleanup_close_ int out = openat(dir, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (out < 0)
		return -errno;
	if ((r = run_decompressor(dec, payload, out)) < 0)
		return r;
	struct stat ost;
	if (fstat(out, &ost) < 0)
		return -errno;
	if (!elf_is_pvh(out, ost.st_size))
		return -ENOEXEC;
	return fsync(out) < 0 ? -errno : 0;
}

int vm_kernel_pvh(const char *bzimage, const char *version, char **elf)
{
	*elf = NULL;
	_cleanup_close_ int kfd = open(bzimage, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (kfd < 0 || fstat(kfd, &st) < 0)
		return -errno;
	/* Keyed by the file's identity: a reinstalled kernel of the same version is a new one. */
	char name[NAME_MAX], tmp[NAME_MAX + 32], full[PATH_MAX];
	snprintf(name, sizeof(name), "vmlinux-%s-%llx-%llx-%llx", version, (unsigned long long)st.st_ino,
		 (unsigned long long)st.st_size, (unsigned long long)st.st_mtim.tv_sec);
	snprintf(full, sizeof(full), "%s/vm/%s", capsule_home(), name);
	capsule_error ignored = { 0 };
	_cleanup_close_ int dir = -1;
	int r = home_subdir_open("vm", &dir, &ignored);
	if (r < 0)
		return r;
	/* Pinned until the vm stops for good: a revert boots again from it. */
	if (vm_store_pin(dir, name) == 0)
		return (*elf = strdup(full)) ? 0 : -ENOMEM;
	snprintf(tmp, sizeof(tmp), ".tmp-%s-%d", name, (int)getpid());
	r = unpack_kernel(kfd, &st, dir, tmp);
	/* Two starts may unpack at once: each writes its own file, the last rename wins. */
	if (r == 0 && renameat(dir, tmp, dir, name) < 0)
		r = -errno;
	if (r == 0)
		r = vm_store_pin(dir, name);
	if (r < 0) {
		unlinkat(dir, tmp, 0);
		return r;
	}
	return (*elf = strdup(full)) ? 0 : -ENOMEM;
}
