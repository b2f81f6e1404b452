"""The OOM floor: no process of a sandbox can make itself the host OOM killer's last choice, and
capsule says where the host does not let it hold that line (root without CAP_SYS_RESOURCE)."""
import json

from secutil import sh

CAP_SYS_RESOURCE = 24


def we_have_cap_sys_resource():
    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(eff & (1 << CAP_SYS_RESOURCE))


def test_a_command_cannot_lower_its_oom_score_adj_below_zero(capsule):
    name = capsule.create()
    r = sh(capsule, name, "cat /proc/self/oom_score_adj; for v in -1 -1000; do "
                          "(echo $v > /proc/self/oom_score_adj) 2>/dev/null && echo lowered-to-$v; done; true")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0"], r.stdout


def test_neither_the_shim_nor_the_agent_hands_a_floor_below_zero_to_anything(capsule):
    # The shim used to set -1000 on itself, for its children (the agent, QEMU, slirp4netns,
    # transform servers) to inherit: with CAP_SYS_RESOURCE that was every command's floor too.
    name = capsule.create()
    info = capsule.inspect(name)
    for pid in (info["shim_pid"], info["init_pid"]):
        with open(f"/proc/{pid}/oom_score_adj") as f:
            assert int(f.read()) >= 0, pid


def test_inspect_and_doctor_say_whether_the_floor_holds(capsule):
    name = capsule.create()
    info = capsule.inspect(name)
    d = json.loads(capsule.run("doctor", "--json", check=True).stdout)
    assert info["oom_floor"] is d["oom_floor"] is we_have_cap_sys_resource()
    if not d["oom_floor"]:
        assert "CAP_SYS_RESOURCE" in info["oom_note"] and "CAP_SYS_RESOURCE" in d["oom_reason"]
        assert "oom_score_adj floor 0  no: no CAP_SYS_RESOURCE" in capsule.run("doctor", check=True).stdout
    else:
        assert "oom_note" not in info


def test_a_raised_agent_score_does_not_reach_the_next_command(capsule):
    # A command inherits the agent's oom_score_adj at its clone and writes its own only when
    # the agent's differs from the one asked for: the sandbox's root may raise the agent's
    # (its /proc files are that root's), and the next command must still start at 0.
    name = capsule.create()
    r = sh(capsule, name, "echo 700 > /proc/1/oom_score_adj && cat /proc/1/oom_score_adj")
    assert r.returncode == 0 and r.stdout.split() == ["700"], (r.stdout, r.stderr)
    r = sh(capsule, name, "cat /proc/self/oom_score_adj")
    assert r.returncode == 0 and r.stdout.split() == ["0"], (r.stdout, r.stderr)
