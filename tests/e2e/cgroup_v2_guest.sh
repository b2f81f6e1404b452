#!/bin/sh
# PID 1 of the guest that test_cgroup_v2.py boots: capsule's guest kernel with the host's root
# over read-only 9p, a pure cgroup v2 hierarchy with its controllers enabled, and the build's
# capsule CLI making containers in it. Each check prints "ok - WHAT" or "not ok - WHAT: ...";
# the last line is "cgv2-summary pass=N fail=M". The kernel hands the command line's unknown
# NAME=VALUE words to init as its environment: CGV2_BUILD is the build folder.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
bad() { fail=$((fail + 1)); echo "not ok - $1"; }
# check WHAT GOT WANT
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }
# check_true WHAT COMMAND...
check_true() { w=$1; shift; if "$@"; then ok "$w"; else bad "$w"; fi; }
section() { echo "# $(cut -d' ' -f1 /proc/uptime)s: $1"; }
finish() {
	echo "cgv2-summary pass=$pass fail=$fail"
	# Setting the console's modes waits for its output to drain (TCSADRAIN): the panic that
	# follows init's exit would cut what is still in the tty's buffer.
	stty sane </dev/console
	exit 0 # init's exit panics the kernel, and panic=-1 with -no-reboot ends QEMU
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=755 run /run
# A pure cgroup v2 host, as Debian 12 boots: the unified hierarchy at /sys/fs/cgroup and
# the controllers capsule uses handed down from its root.
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
CG=/sys/fs/cgroup
for c in $(cat $CG/cgroup.controllers); do echo "+$c" >$CG/cgroup.subtree_control; done
check "the kernel offers cpu, cpuset, memory and pids on v2" "$(cat $CG/cgroup.subtree_control)" \
	"cpuset cpu memory pids"
# capsule's state on ext4 (the test's disk): its image layers are idmapped, which 9p and a
# 6.1 tmpfs cannot be.
mkdir -p /run/disk /run/tmp
mount -t ext4 /dev/vda /run/disk || { bad "mount the state disk"; finish; }
mkdir -p /run/disk/root
export CAPSULE_HOME=/run/disk/root TMPDIR=/run/tmp
C="$CGV2_BUILD/capsule"
[ -x "$C" ] || { bad "no capsule CLI at '$C'"; finish; }

# cap ARGS...: the CLI, its output in $out, its exit code in $rc.
cap() { out=$("$C" "$@" 2>&1); rc=$?; }
# folder NAME: the sandbox's cgroup folder (capsule/NAME~<id>.<digest>), "" when none.
folder() { for d in $CG/capsule/"$1"~*; do [ -d "$d" ] && echo "$d"; done; }
# json KEY: a top-level number or string of `capsule inspect`'s JSON on stdin (sed, not
# python: each python start is a second under TCG).
json() { tr -d '\n' | sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\).*/\1/p"; }
procs_has() { grep -qx "$2" "$1/cgroup.procs"; }
events() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }
cpus_of() { awk '/^Cpus_allowed_list/ { print $2 }' "/proc/$1/status"; }
# gone DIR: whether DIR is gone within 20 s. A sandbox's end is answered before its cgroup is
# removed (docs/architecture.md, "The end of an ephemeral sandbox ..."): it goes a moment later.
gone() {
	i=0
	while [ -e "$1" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
	[ ! -e "$1" ]
}
no_folders() {
	i=0
	while [ -n "$(find $CG/capsule -mindepth 1 -type d)" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
	[ -z "$(find $CG/capsule -mindepth 1 -type d)" ]
}

# ---- a named sandbox with every limit ----
section "a named sandbox with every limit"
cap create --name lim -m 64M --cpus 0.5 --pids-limit 20 --cpuset-cpus 1
check "create with limits" "$rc" 0
[ "$rc" = 0 ] || echo "$out"
d=$(folder lim)
check_true "its cgroup folder is below capsule/ ($d)" test -n "$d" -a -d "$d"
check "memory.max" "$(cat $d/memory.max)" 67108864
check "memory.swap.max (no swap beyond the limit)" "$(cat $d/memory.swap.max)" 0
check "cpu.max" "$(cat $d/cpu.max)" "50000 100000"
check "pids.max" "$(cat $d/pids.max)" 20
check "cpuset.cpus" "$(cat $d/cpuset.cpus)" 1
init=$("$C" inspect lim | json init_pid)
check_true "cgroup.procs holds the sandbox's init ($init)" procs_has "$d" "$init"
check "the init's /proc/PID/cgroup" "$(cat /proc/$init/cgroup)" "0::${d#$CG}"
check "the init may run on cpu 1 only" "$(cpus_of $init)" 1
# A busy loop over the cpu limit is throttled (cpu.stat counts the periods it was).
cap exec lim -- timeout 0.5 sh -c 'while :; do :; done'
check_true "cpu.max throttles a busy loop (cpu.stat nr_throttled > 0)" test "$(events $d/cpu.stat nr_throttled)" -gt 0
cap exec -d lim -- sleep 300
check_true "an exec's process joins the cgroup" test "$(wc -l <$d/cgroup.procs)" -ge 2

# The pids limit stops a fork bomb: forks past 20 fail, the cgroup counts them.
cap exec lim -- sh -c 'i=0; while [ $i -lt 40 ]; do sleep 1 & i=$((i + 1)); done; wait'
check_true "pids.max stops forks (pids.events max > 0)" test "$(events $d/pids.events max)" -gt 0

# The memory limit OOM-kills: 128 MiB written under a 64 MiB limit without swap.
cap exec lim -- python3 -c 'b = b"x" * (128 << 20); print(len(b))'
check "a command over memory.max is killed (137)" "$rc" 137
check_true "memory.events counts the OOM kill" test "$(events $d/memory.events oom_kill)" -ge 1

# ---- update ----
section "update"
cap update --memory 96M --memory-swap 128M --memory-reservation 48M --cpus 0.25 --cpu-shares 512 \
	--pids-limit 30 --cpuset-cpus 0 --cpuset-mems 0 lim
check "update" "$rc" 0
[ "$rc" = 0 ] || echo "$out"
check "memory.max after update" "$(cat $d/memory.max)" 100663296
check "memory.swap.max after update (swap minus memory)" "$(cat $d/memory.swap.max)" 33554432
check "memory.low after update" "$(cat $d/memory.low)" 50331648
check "cpu.weight after update (runc's mapping of 512 shares)" "$(cat $d/cpu.weight)" 20
check "cpuset.mems after update" "$(cat $d/cpuset.mems)" 0
check "cpu.max after update" "$(cat $d/cpu.max)" "25000 100000"
check "pids.max after update" "$(cat $d/pids.max)" 30
check "cpuset.cpus after update" "$(cat $d/cpuset.cpus)" 0
check "the init moved to cpu 0" "$(cpus_of $init)" 0

# ---- stats, from the cgroup's files ----
section "stats, from the cgroup's files"
stats=$(python3 - "$CGV2_BUILD/libcapsule.so" lim <<'EOF'
import ctypes, sys
class Net(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 16)] + [(k, ctypes.c_uint64) for k in ("rx", "tx", "rxp", "txp")]
class Stats(ctypes.Structure):  # capsule.h's capsule_stats
    _fields_ = [("active", ctypes.c_uint32), ("idle_ms", ctypes.c_uint64),
                ("has_cpu", ctypes.c_bool), ("has_memory", ctypes.c_bool), ("has_pids", ctypes.c_bool),
                ("has_disk", ctypes.c_bool), ("cpu_usec", ctypes.c_uint64), ("memory_bytes", ctypes.c_uint64),
                ("pids", ctypes.c_uint64), ("disk_read", ctypes.c_uint64), ("disk_write", ctypes.c_uint64),
                ("n_net", ctypes.c_size_t), ("net", Net * 8), ("memory_limit_bytes", ctypes.c_uint64),
                ("pids_limit", ctypes.c_uint64), ("has_oom", ctypes.c_bool), ("oom_kills", ctypes.c_uint64)]
class Err(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]
lib = ctypes.CDLL(sys.argv[1])
sb, st, err = ctypes.c_void_p(), Stats(), Err()
if lib.capsule_sandbox_open(ctypes.byref(sb), sys.argv[2].encode(), ctypes.byref(err)) or \
        lib.capsule_sandbox_stats(sb, ctypes.byref(st), ctypes.byref(err)):
    print("error", err.message.decode())
else:
    print(int(st.has_memory), int(st.has_pids), int(st.has_cpu), int(st.has_oom), st.memory_limit_bytes,
          st.pids_limit, st.oom_kills, int(st.memory_bytes > 0), int(st.pids >= 2), int(st.cpu_usec > 0))
EOF
)
check "capsule_sandbox_stats reads the cgroup (has memory pids cpu oom, limits, oom kills, usage)" \
	"$stats" "1 1 1 1 100663296 30 $(events $d/memory.events oom_kill) 1 1 1"

# ---- pause and resume: cgroup.freeze ----
section "pause and resume: cgroup.freeze"
cap pause lim
check "pause" "$rc" 0
check "cgroup.freeze after pause" "$(cat $d/cgroup.freeze)" 1
check "cgroup.events frozen after pause" "$(events $d/cgroup.events frozen)" 1
cap exec lim -- true
check_true "exec in a paused sandbox is refused" test "$rc" -ne 0
cap resume lim
check "resume" "$rc" 0
check "cgroup.freeze after resume" "$(cat $d/cgroup.freeze)" 0
check "cgroup.events frozen after resume" "$(events $d/cgroup.events frozen)" 0
cap exec lim -- true
check "exec after resume" "$rc" 0

# ---- a memory limit below what cannot be reclaimed ----
section "a memory limit below what cannot be reclaimed"
# v2 takes any memory.max and OOM-kills to meet it; capsule refuses it as v1's kernel does.
cap exec -d lim -- sh -c 'head -c 24m /dev/zero >/dev/shm/held && sleep 300'
i=0
while [ "$(cat $d/memory.current)" -lt $((24 << 20)) ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
kills=$(events $d/memory.events oom_kill)
cap update --memory 8M lim
check_true "update below what the sandbox holds is refused ($out)" \
	test "$rc" -ne 0 -a -n "$(echo "$out" | grep 'cannot be reclaimed')"
check "it keeps memory.max" "$(cat $d/memory.max)" 100663296
check "and memory.high" "$(cat $d/memory.high)" max
check "and kills nothing" "$(events $d/memory.events oom_kill)" "$kills"
cap exec lim -- stat -c %s /dev/shm/held
check "the memory is still held" "$rc $out" "0 $((24 << 20))"

# ---- a stop and a start: the cgroup made again, with the limits of the last update ----
section "a stop and a start: the cgroup made again, with the limits of the last update"
cap stop lim
check "stop" "$rc" 0
check_true "a stopped sandbox has no cgroup folder ($d)" gone "$d"
cap start lim
check "start" "$rc" 0
[ "$rc" = 0 ] || echo "$out"
d=$(folder lim)
check "memory.max after a start" "$(cat $d/memory.max)" 100663296
check "cpu.max after a start" "$(cat $d/cpu.max)" "25000 100000"
check "pids.max after a start" "$(cat $d/pids.max)" 30
check "cpuset.cpus after a start" "$(cat $d/cpuset.cpus)" 0
init=$("$C" inspect lim | json init_pid)
check_true "cgroup.procs holds the new init ($init)" procs_has "$d" "$init"

# ---- lifting the limits ----
section "lifting the limits"
cap update --memory -1 --cpus 0 --pids-limit 0 lim
check "update lifting every limit" "$rc" 0
check "memory.max lifted" "$(cat $d/memory.max)" max
check "cpu.max lifted" "$(cat $d/cpu.max)" "max 100000"
check "pids.max lifted" "$(cat $d/pids.max)" max
check "memory.swap.max lifted" "$(cat $d/memory.swap.max)" max
cap update --memory 80M lim
check "update of the memory alone" "$rc" 0
check "memory.max" "$(cat $d/memory.max)" 83886080
check "memory.swap.max: no swap beyond a new limit" "$(cat $d/memory.swap.max)" 0

# ---- a sandbox without limits gets a cpuset by update ----
section "a sandbox without limits gets a cpuset by update"
cap create --name plain
check "create without limits" "$rc" 0
p=$(folder plain)
check_true "its cgroup folder ($p)" test -n "$p" -a -d "$p"
check "the default pids.max" "$(cat $p/pids.max)" 4096
check "no memory limit" "$(cat $p/memory.max)" max
cap update --cpuset-cpus 1 plain
check "update --cpuset-cpus of a sandbox made without one" "$rc" 0
[ "$rc" = 0 ] || echo "$out"
check "its cpuset.cpus" "$(cat $p/cpuset.cpus 2>&1)" 1
pinit=$("$C" inspect plain | json init_pid)
check "its init moved to cpu 1" "$(cpus_of $pinit)" 1
cap update --memory 64M --cpus 0.5 --pids-limit 100 plain
check "update gives limits to a sandbox made without" "$rc" 0
check "its memory.max" "$(cat $p/memory.max)" 67108864
check "its cpu.max" "$(cat $p/cpu.max)" "50000 100000"
check "its pids.max" "$(cat $p/pids.max)" 100

# ---- removal ----
section "removal"
# A paused sandbox is removed too: its frozen processes are killed through the cgroup.
cap pause lim
check "pause before rm -f" "$(cat $d/cgroup.freeze)" 1
cap rm -f lim
check "rm -f" "$rc" 0
check_true "rm -f leaves no cgroup folder ($d)" gone "$d"
# A shim killed with SIGKILL leaves its cgroup; rm -f sweeps it by name.
shim=$("$C" inspect plain | json shim_pid)
kill -9 "$shim"
cap rm -f plain
check "rm -f after the shim was killed" "$rc" 0
check_true "rm -f swept the killed shim's cgroup ($p)" gone "$p"

# ---- an ephemeral run ----
section "an ephemeral run"
cap run -m 32M --pids-limit 10 -- python3 -c 'b = b"x" * (96 << 20)'
check "run over its memory limit is OOM-killed (137)" "$rc" 137
cap run --pids-limit 10 -- sh -c 'cat /proc/self/cgroup'
check "run: the command sees its own cgroup as the root (cgroup namespace)" "$out" "0::/"
check_true "no cgroup folder is left below capsule/" no_folders
check "cgroup.procs of capsule/ is empty" "$(cat $CG/capsule/cgroup.procs)" ""

# ---- a user's delegated subtree, as systemd's Delegate=yes gives one ----
section "a user's delegated subtree, as systemd's Delegate=yes gives one"
# user@1000.service and below are the user's; the user's processes are in a leaf (app.slice/
# shell), so the nearest writable ancestor without processes of its own (app.slice) is where
# capsule can enable controllers for its sandboxes.
U=$CG/user.slice/user-1000.slice/user@1000.service
mkdir -p $U/app.slice/shell
echo "+cpu +cpuset +memory +pids" >$CG/user.slice/cgroup.subtree_control
echo "+cpu +cpuset +memory +pids" >$CG/user.slice/user-1000.slice/cgroup.subtree_control
chown -R 1000:1000 $U
echo $$ >$U/app.slice/shell/cgroup.procs
UH=/run/disk/user
mkdir -p $UH && chown 1000:1000 $UH
ucap() {
	out=$(setpriv --reuid=1000 --regid=1000 --clear-groups env HOME=$UH CAPSULE_HOME=$UH/capsule TMPDIR=$UH \
		"$C" "$@" 2>&1)
	rc=$?
}
ucap create --name ul -m 64M --cpus 0.5 --pids-limit 20
check "a user's create with limits" "$rc" 0
[ "$rc" = 0 ] || echo "$out"
# Below the nearest of the user's folders that can give it cpu, memory and pids.
u=$(find $U -type d -name 'ul~*')
check_true "its cgroup is in the user's subtree ($u)" test -n "$u" -a -d "$u"
check "the user's memory.max" "$(cat $u/memory.max)" 67108864
check "the user's cpu.max" "$(cat $u/cpu.max)" "50000 100000"
check "the user's pids.max" "$(cat $u/pids.max)" 20
ucap inspect ul
check "what enforces the user's pids limit" "$(echo "$out" | json pids_limit_by)" cgroup
ucap update --memory 96M --pids-limit 30 ul
check "a user's update" "$rc" 0
check "the user's memory.max after update" "$(cat $u/memory.max)" 100663296
check "the user's pids.max after update" "$(cat $u/pids.max)" 30
ucap pause ul
check "a user's pause freezes its cgroup" "$rc $(cat $u/cgroup.freeze)" "0 1"
ucap resume ul
check "a user's resume thaws it" "$rc $(cat $u/cgroup.freeze)" "0 0"
ucap rm -f ul
check "a user's rm -f" "$rc" 0
check_true "the user's rm -f leaves no cgroup folder" gone "$u"
ucap run -m 32M -- python3 -c 'b = b"x" * (96 << 20)'
check "a user's run over its memory limit is OOM-killed (137)" "$rc" 137
check_true "no cgroup folder is left in the user's subtree" test -z "$(find $U -type d -path '*/capsule/*')"

# A user without a delegated cgroup (its own is root's): no cgroup, so no limit but pids
# (RLIMIT_NPROC), and a limit asked for is refused in one line naming the controller.
mkdir -p /run/disk/other && chown 1001:1001 /run/disk/other
ocap() {
	out=$(setpriv --reuid=1001 --regid=1001 --clear-groups env HOME=/run/disk/other \
		CAPSULE_HOME=/run/disk/other/capsule TMPDIR=/run/disk/other "$C" "$@" 2>&1)
	rc=$?
}
echo $$ >$CG/cgroup.procs
ocap run --pids-limit 10 -- awk '/^Max processes/ { print $3 }' /proc/self/limits
check "a user without delegation runs, its pids limit RLIMIT_NPROC" "$rc $out" "0 10"
check_true "and no cgroup was made for it" \
	test -z "$(find $CG -type d -name 'capsule' ! -path "$CG/capsule" ! -path "$U/*")"
ocap run -m 64M -- true
check "a memory limit without delegation is refused" "$rc" 125
check_true "in one line naming the memory controller ($out)" \
	test "$(echo "$out" | wc -l)" = 1 -a -n "$(echo "$out" | grep 'memory controller')"

finish
