"""Host id slots (slots/N, a link naming its owner: src/lib/home.c): a create takes the lowest
slot no living sandbox holds, passing over the slots of sandboxes that have a folder without
reading their configuration, and takes over a link a crash left behind."""
import os

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="id slots are a root caller's (rootless maps its own ids)")


def _slots(capsule):
    return os.path.join(capsule.home, "slots")


def _slot_of(capsule, name):
    with open(os.path.join(capsule.home, "run", name, "config")) as f:
        return int(next(line.split("=", 1)[1] for line in f if line.startswith("id_slot=")))


def _lowest_free(capsule):
    os.makedirs(_slots(capsule), 0o700, exist_ok=True)  # a fresh home makes it at its first create
    taken = {int(e) for e in os.listdir(_slots(capsule)) if e.isdigit()}
    return next(n for n in range(len(taken) + 1) if n not in taken)


def _plant(capsule, slot, owner):
    os.symlink(owner, os.path.join(_slots(capsule), str(slot)))


def _owner(capsule, slot):
    path = os.path.join(_slots(capsule), str(slot))
    return os.readlink(path) if os.path.lexists(path) else None


def test_a_link_whose_owner_has_no_folder_is_taken_over_at_once(capsule):
    ghost = capsule.unique_name("ghost")
    free = _lowest_free(capsule)
    _plant(capsule, free, ghost)
    # And one left in the middle of a rename (a pool's take), neither name with a folder.
    _plant(capsule, free + 1, f"{ghost}>{ghost}x")
    a = capsule.create()
    b = capsule.create()
    assert (_slot_of(capsule, a), _slot_of(capsule, b)) == (free, free + 1)
    assert (_owner(capsule, free), _owner(capsule, free + 1)) == (a, b)
    capsule.run("rm", "-f", a, b, check=True)
    assert _owner(capsule, free) is None and _owner(capsule, free + 1) is None


def test_a_stale_link_naming_a_living_sandbox_is_taken_over_once_that_sandbox_is_gone(capsule):
    # slots/F names sandbox A, whose own slot is another (a crash between a folder's rename and
    # its config, or a pod owner's reused name): a create passes it over while A has a folder,
    # never sharing a range with a sandbox that may still hold it, and takes it once A is gone.
    a = capsule.create()
    free = _lowest_free(capsule)
    _plant(capsule, free, a)
    b = capsule.create()
    assert _slot_of(capsule, b) != free
    assert _slot_of(capsule, a) not in (free, _slot_of(capsule, b))
    assert _owner(capsule, free) == a
    capsule.run("rm", "-f", a, check=True)
    # A's own slot is free again too: the next two creates take that one and F.
    c, d = capsule.create(), capsule.create()
    assert free in (_slot_of(capsule, c), _slot_of(capsule, d))
    assert _owner(capsule, free) in (c, d)
    capsule.run("rm", "-f", b, c, d, check=True)
    assert _owner(capsule, free) is None


def test_many_sandboxes_hold_distinct_slots_and_give_them_back(capsule):
    names = [capsule.create() for _ in range(6)]
    slots = [_slot_of(capsule, n) for n in names]
    assert len(set(slots)) == len(slots)
    assert [_owner(capsule, s) for s in slots] == names
    capsule.run("rm", "-f", *names, check=True)
    assert all(_owner(capsule, s) is None for s in slots)
