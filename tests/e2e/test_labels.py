"""Labels (capsule.h capsule_config_add_label): `run/create --label`, kept in the sandbox's
configuration, shown by inspect, matched by `ps --filter label=...`."""
import json


def names(capsule, *filters):
    args = ["ps", "-a", "--json"]
    for f in filters:
        args += ["--filter", f]
    r = capsule.run(*args)
    assert r.returncode == 0, r.stderr
    return sorted(s["name"] for s in json.loads(r.stdout))


def test_labels_from_the_cli_are_kept_shown_and_filtered(capsule):
    a = capsule.create("--label", "team=red", "-l", "job=42", "-l", "note=a b=c")
    b = capsule.create("--label", "team=blue")
    c = capsule.create()
    assert capsule.inspect(a)["labels"] == {"team": "red", "job": "42", "note": "a b=c"}
    assert capsule.inspect(c)["labels"] == {}
    mine = {a, b, c}
    assert [n for n in names(capsule, "label=team=red") if n in mine] == [a]
    assert [n for n in names(capsule, "label=team") if n in mine] == sorted([a, b])
    assert [n for n in names(capsule, "label=team=red", "label=job=42") if n in mine] == [a]
    assert [n for n in names(capsule, "label=team=red", "label=job=41") if n in mine] == []
    assert [n for n in names(capsule, "label=note=a b=c") if n in mine] == [a]  # the value is all after the first '='
    # The plain table filters too, and -f=... is the same flag.
    r = capsule.run("ps", "-a", "--filter=label=team=blue")
    assert r.returncode == 0 and b in r.stdout and a not in r.stdout
    # Kept with the sandbox: a stop and a start keep them.
    capsule.run("stop", a, check=True)
    capsule.run("start", a, check=True)
    assert capsule.inspect(a)["labels"]["job"] == "42"
    assert [n for n in names(capsule, "label=job=42") if n in mine] == [a]


def test_bad_labels_and_filters_get_one_line_errors(capsule):
    for args, word in [(["-l", "noequals"], "KEY=VALUE"), (["-l", "bad key=1"], "bad key"),
                       (["-l", "=v"], "1 to 63"), (["-l", "k=" + "v" * 256], "longer than 255"),
                       (["-l", "k=1", "-l", "k=2"], "twice"), (["-l", "k=a\tb"], "control")]:
        name = capsule.unique_name()
        r = capsule.run("create", "--name", name, *args)
        assert r.returncode == 125 and r.stderr.count("\n") == 1 and word in r.stderr, (args, r.stderr)
        assert name not in names(capsule)  # nothing left half-made
    r = capsule.run("create", "--name", capsule.unique_name(), *sum([["-l", f"k{i}=v"] for i in range(33)], []))
    assert r.returncode == 125 and "at most 32" in r.stderr
    for args, word in [(["--filter", "name=x"], "unknown filter"), (["--filter", "label=a b"], "a b"),
                       (["--filter"], "needs a value")]:
        r = capsule.run("ps", *args)
        assert r.returncode == 125 and r.stderr.count("\n") == 1 and word in r.stderr, (args, r.stderr)
