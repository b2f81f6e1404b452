/* The guest's network (vm isolation, docs/architecture.md "vm isolation"). With `full` the
 * shim gives QEMU a user-mode network and a virtio-net NIC and says capsule.net=full on the
 * kernel command line; here, before the move into the sandbox's root, the agent configures
 * that NIC as slirp4netns configures tap0 for a container: 10.0.2.15/24, default route via
 * 10.0.2.2 (QEMU's gateway, which is also the host's loopback), and /etc/resolv.conf naming
 * 10.0.2.3, bound read-only over the root's own. Plain ioctls: an image need not have `ip`.
 * With an egress allowlist (capsule.allow=, capsule.dns=proxy) or a quota (capsule.quota=) its
 * nf_tables table is loaded first (vm_egress.c); with the DNS proxy, resolv.conf names the
 * agent's relay on 127.0.0.53 (vm_dns.c).
 * With none and mounts-only there is no NIC: lo, which main brings up, is all there is. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "capsule.h"
#include "util.h"
#include "vm_egress.h"

#define VM_NET_ADDRESS "10.0.2.15"
#define VM_NET_NETMASK "255.255.255.0"
#define NIC_WAIT_MS 5000

static void set_addr(struct sockaddr *sa, const char *ip)
{
	struct sockaddr_in *in = (struct sockaddr_in *)sa;
	memset(in, 0, sizeof(*in));
	in->sin_family = AF_INET;
	inet_pton(AF_INET, ip, &in->sin_addr);
}

/* The first interface that is not lo: the NIC the shim asked for (eth0 with no udev). */
static int find_nic(char name[IF_NAMESIZE])
{
	uint64_t deadline = now_ms() + NIC_WAIT_MS;
	do {
		struct if_nameindex *ifs = if_nameindex();
		for (struct if_nameindex *i = ifs; ifs && i->if_index; i++) {
			if (strcmp(i->if_name, "lo") != 0) {
				snprintf(name, IF_NAMESIZE, "%s", i->if_name);
				if_freenameindex(ifs);
				return 0;
			}
		}
		if (ifs)
			if_freenameindex(ifs);
		usleep(5000);
	} while (now_ms() < deadline);
	return -ENODEV;
}

static int configure_nic(const char *nic, char *why, size_t whylen)
{
	_cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return snprintf(why, whylen, "socket: %s", strerror(errno)), -1;
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", nic);
	set_addr(&ifr.ifr_addr, VM_NET_ADDRESS);
	if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
		return snprintf(why, whylen, "address of %s: %s", nic, strerror(errno)), -1;
	set_addr(&ifr.ifr_netmask, VM_NET_NETMASK);
	if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
		return snprintf(why, whylen, "netmask of %s: %s", nic, strerror(errno)), -1;
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return snprintf(why, whylen, "flags of %s: %s", nic, strerror(errno)), -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		return snprintf(why, whylen, "bringing %s up: %s", nic, strerror(errno)), -1;
	struct rtentry rt = { 0 };
	set_addr(&rt.rt_dst, "0.0.0.0");
	set_addr(&rt.rt_genmask, "0.0.0.0");
	set_addr(&rt.rt_gateway, CAPSULE_NETWORK_GATEWAY);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = (char *)nic;
	if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST)
		return snprintf(why, whylen, "default route via %s: %s", CAPSULE_NETWORK_GATEWAY, strerror(errno)), -1;
	return 0;
}

/* The file lives outside the new root (in the initramfs's RAM) and is bound read-only over
 * its /etc/resolv.conf, as the container level binds run/<name>/resolv.conf: the sandbox's
 * root (which has no CAP_SYS_ADMIN) cannot point DNS elsewhere. With the DNS proxy it names
 * the agent's relay (vm_dns.c), else the NAT's server. */
static int bind_resolv_conf(const char *newroot, char *why, size_t whylen)
{
	static const char nat[] = "# written by capsule: the DNS server of the sandbox's NAT\nnameserver " CAPSULE_NETWORK_DNS "\n";
	static const char proxy[] = "# written by capsule: the sandbox's DNS proxy, which answers only allowed names\n"
				    "nameserver " VM_DNS_PROXY_ADDR "\n";
	const char *text = vm_dns_wanted() ? proxy : nat;
	int fd = open("/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, text, strlen(text)) < 0) {
		snprintf(why, whylen, "writing resolv.conf: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	char target[256];
	snprintf(target, sizeof(target), "%s/etc/resolv.conf", newroot);
	struct stat st;
	if (lstat(target, &st) < 0 || !S_ISREG(st.st_mode)) {
		/* Missing, or a symlink (systemd-resolved's): a plain file takes its place in
		 * the root's writable layer, so the bind cannot be led anywhere else. */
		unlink(target);
		int t = open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (t < 0)
			return snprintf(why, whylen, "creating '%s': %s", target, strerror(errno)), -1;
		close(t);
	}
	if (mount("/resolv.conf", target, NULL, MS_BIND, NULL) < 0 ||
	    mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return snprintf(why, whylen, "binding '%s': %s", target, strerror(errno)), -1;
	return 0;
}

static bool cmdline_wants_full(void)
{
	char net[16];
	return agent_cmdline_get("capsule.net", net, sizeof(net)) && !strcmp(net, "full");
}

/* capsule.allow=, capsule.dns=proxy and capsule.quota= (vm_egress.h): parsed as untrusted
 * text, loaded as one nf_tables batch. The table is in place before the NIC comes up, so not
 * one packet leaves unfiltered. */
static int load_allowlist(char *why, size_t whylen)
{
	/* The whole command line fits (2048 bytes on x86), so the value is never cut short. */
	char text[4096], quota[24];
	struct vm_egress_rule rules[VM_EGRESS_MAX_RULES];
	struct vm_egress_table t = { .rules = rules, .dns = vm_dns_wanted() };
	size_t acks, len;
	char what[160];
	if (agent_cmdline_get("capsule.allow", text, sizeof(text)) &&
	    vm_egress_parse(text, rules, VM_EGRESS_MAX_RULES, &t.n, what, sizeof(what)) < 0)
		return snprintf(why, whylen, "egress allowlist: capsule.allow: %s", what), -1;
	if (agent_cmdline_get("capsule.quota", quota, sizeof(quota))) {
		char *end;
		errno = 0;
		t.quota = strtoull(quota, &end, 10);
		if (errno || *end || !t.quota || quota[0] < '1' || quota[0] > '9')
			return snprintf(why, whylen, "egress quota: capsule.quota: '%s' is not a number of bytes", quota), -1;
	}
	if (!t.n && !t.dns && !t.quota)
		return 0;
	uint8_t *batch = malloc(VM_EGRESS_BATCH_MAX);
	if (!batch)
		return snprintf(why, whylen, "egress allowlist: out of memory"), -1;
	if (!(len = vm_egress_batch(&t, 1, batch, VM_EGRESS_BATCH_MAX, &acks))) {
		free(batch);
		return snprintf(why, whylen, "egress allowlist: %zu rules do not fit one batch", t.n), -1;
	}
	int r = vm_egress_send(batch, len, acks, 1, what, sizeof(what));
	free(batch);
	if (r < 0)
		return snprintf(why, whylen, "egress allowlist: %s", what), -1;
	return 0;
}

int vm_net_setup(const char *newroot, char *why, size_t whylen)
{
	if (!cmdline_wants_full())
		return 0;
	if (load_allowlist(why, whylen) < 0)
		return -1;
	char nic[IF_NAMESIZE];
	if (find_nic(nic) < 0)
		return snprintf(why, whylen, "no network interface appeared (is virtio_net loaded?)"), -1;
	if (configure_nic(nic, why, whylen) < 0 || bind_resolv_conf(newroot, why, whylen) < 0)
		return -1;
	return 0;
}
