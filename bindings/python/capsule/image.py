"""Images in the store ($CAPSULE_HOME/images): pull from a registry, import an archive, list,
remove. A sandbox made with Sandbox(image="alpine:3.20") pulls what it lacks by itself."""
import ctypes
import json

from ._lib import lib, PullOptions, PULL_OPTIONS_VERSION, IMAGE_PROGRESS_FN, enc, call, byref, c_void_p, take_bytes


def _out_str(out):
    return take_bytes(out.value, len(ctypes.string_at(out.value))).decode()


def pull(ref, *, insecure=False, platform=None, progress=None):
    """Pull REF ("alpine:3.20", "localhost:5000/team/tool:1") and return its canonical name.
    PROGRESS, if given, is called as progress(stage, digest, done, total)."""
    cb = IMAGE_PROGRESS_FN(lambda st, d, done, total, _: progress(st.decode(), d.decode(), done, total)) \
        if progress else IMAGE_PROGRESS_FN()
    opts = PullOptions(version=PULL_OPTIONS_VERSION, insecure=bool(insecure), platform=enc(platform, "platform"),
                       progress=cb, payload=None)
    out = c_void_p()
    call(lib.capsule_image_pull, enc(ref, "image"), byref(opts), byref(out), op="image")
    return _out_str(out)


def import_archive(path, name):
    """Import an oci-archive or docker-archive tarball as NAME; returns its canonical name."""
    out = c_void_p()
    call(lib.capsule_image_import, enc(path), enc(name, "image"), None, None, byref(out), op="image")
    return _out_str(out)


def list():  # noqa: A001 - the verb users know
    """The store's images: dicts of name, digest, config, layers, size, created."""
    out = c_void_p()
    call(lib.capsule_image_list_json, byref(out), op="image")
    return json.loads(_out_str(out))


def remove(ref):
    """Forget REF; what no other image, sandbox or save uses is deleted."""
    call(lib.capsule_image_remove, enc(ref, "image"), op="image")
