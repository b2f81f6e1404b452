/* Whether a KVM device can run an ordinary guest kernel, decided before QEMU starts.
 *
 * A /dev/kvm that opens is not enough. Some hosts (nested cloud machines) expose a KVM whose
 * backend is not the CPU's virtualization extensions but page tables (kvm_pvm): it runs only
 * kernels built as PVM guests, and under it QEMU either aborts (-cpu host: "failed to set MSR
 * 0x10a") or the guest hangs, silent, right after the bootloader. Each of these is known from
 * the host before any boot, so auto picks TCG at once instead of waiting out a silent guest. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "vm.h"

/* Whether the CPU flags in /proc/cpuinfo name hardware virtualization (Intel VT-x or AMD-V),
 * which an ordinary guest kernel needs from KVM on x86. */
static bool cpu_has_hw_virt(void)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (read_file_at(AT_FDCWD, "/proc/cpuinfo", 4u << 20, &text, &len) < 0)
		return true; /* unknown: let the boot decide, as before the probe */
	for (char *line = text; line && *line;) {
		char *next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (!strncmp(line, "flags", 5)) {
			for (char *save = NULL, *w = strtok_r(line + 5, " \t:", &save); w; w = strtok_r(NULL, " \t", &save))
				if (!strcmp(w, "vmx") || !strcmp(w, "svm"))
					return true;
			return false; /* every CPU lists the same flags: the first line says it */
		}
		line = next;
	}
	return true;
}

int vm_kvm_probe(const char *dev, char *why, size_t size)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		struct stat st;
		struct group gr, *g = NULL;
		char buf[1024];
		/* A user reaches KVM through the device's group (kvm on Debian): say which. */
		if (e == EACCES && stat(dev, &st) == 0 && getgrgid_r(st.st_gid, &gr, buf, sizeof(buf), &g) == 0 && g)
			snprintf(why, size, "cannot open '%s': %s (its group '%s' may: usermod -aG %s USER)", dev,
				 strerror(e), g->gr_name, g->gr_name);
		else
			snprintf(why, size, "cannot open '%s': %s", dev, strerror(e));
		return -e;
	}
	int version = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		int e = version < 0 ? errno : EPROTO;
		close(fd);
		if (version < 0)
			snprintf(why, size, "'%s' is not a KVM device (KVM_GET_API_VERSION: %s)", dev, strerror(e));
		else
			snprintf(why, size, "'%s' speaks KVM API %d, not %d", dev, version, KVM_API_VERSION);
		return -e;
	}
#if defined(__x86_64__) || defined(__i386__)
	if (!cpu_has_hw_virt()) {
		close(fd);
		if (access("/sys/module/kvm_pvm", F_OK) == 0)
			snprintf(why, size, "'%s' exists but cannot run a guest: its backend is kvm_pvm (page-table "
					    "virtualization, for kernels built as PVM guests), and the CPU has no vmx or svm",
				 dev);
		else
			snprintf(why, size, "'%s' exists but cannot run a guest: the CPU has no vmx or svm flag "
					    "(no hardware virtualization)",
				 dev);
		return -ENODEV;
	}
#endif
	/* A KVM that another hypervisor holds, or that is out of VM slots, fails here. */
	int vmfd = ioctl(fd, KVM_CREATE_VM, 0);
	if (vmfd < 0) {
		int e = errno;
		close(fd);
		snprintf(why, size, "'%s' exists but cannot run a guest: KVM_CREATE_VM: %s", dev, strerror(e));
		return -e;
	}
	close(vmfd);
	close(fd);
	why[0] = '\0';
	return 0;
}
