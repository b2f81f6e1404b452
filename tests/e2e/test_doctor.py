"""capsule doctor and version."""
import json


def _get(doc, flat, nested):
    """doctor's JSON has had a flat ("container_usable") and a nested ("container": {"usable"}) form."""
    if flat in doc:
        return doc[flat]
    cur = doc
    for k in nested:
        cur = cur[k]
    return cur


def test_doctor_json_parses_and_container_is_usable(capsule):
    r = capsule.run("doctor", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert _get(doc, "container_usable", ("container", "usable")) is True
    assert doc["home"] == capsule.home
    assert doc["version"] == capsule.run("version").stdout.split()[1]


def test_doctor_reports_cgroup_controllers(capsule):
    doc = json.loads(capsule.run("doctor", "--json", check=True).stdout)
    for c in ("memory", "pids", "cpu"):
        assert _get(doc, f"cgroup_{c}", ("container", "cgroups", c)) is True, c


def test_doctor_without_json_succeeds(capsule):
    r = capsule.run("doctor")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_version(capsule):
    r = capsule.run("version")
    assert r.returncode == 0
    assert r.stdout.startswith("capsule ")
    assert capsule.run("--version").stdout == r.stdout
