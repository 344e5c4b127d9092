"""A minimal PEP 517 backend for the jobd client: builds a pure-Python
wheel of the jobd package (with its generated jobd.v1 stubs) using only the
standard library, so pip can install it offline with build isolation.

Reads name, version, description and dependencies from pyproject.toml.
"""

import base64
import hashlib
import os
import shutil
import subprocess
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUBS = os.path.join(ROOT, "jobd", "v1")


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _ensure_stubs():
    if os.path.exists(os.path.join(STUBS, "jobd_pb2_grpc.py")):
        return
    proto = os.path.normpath(os.path.join(ROOT, "..", "..", "proto"))
    plugin = shutil.which("grpc_python_plugin")
    protoc = shutil.which("protoc")
    if not (plugin and protoc and os.path.isdir(proto)):
        raise RuntimeError(
            "jobd: the jobd.v1 stubs are missing and cannot be generated "
            "(needs protoc and grpc_python_plugin: Debian's protobuf-compiler "
            "and protobuf-compiler-grpc, and the jobd source tree); build "
            "the jobd_python target first")
    os.makedirs(STUBS, exist_ok=True)
    subprocess.run([protoc, "-I", proto, "--python_out=" + ROOT,
                    "--grpc_python_out=" + ROOT,
                    "--plugin=protoc-gen-grpc_python=" + plugin,
                    os.path.join(proto, "jobd", "v1", "jobd.proto")],
                   check=True)
    open(os.path.join(STUBS, "__init__.py"), "a").close()


def _metadata(p):
    lines = ["Metadata-Version: 2.1", "Name: " + p["name"],
             "Version: " + p["version"], "Summary: " + p["description"],
             "Requires-Python: " + p["requires-python"]]
    lines += ["Requires-Dist: " + d for d in p.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def _dist_info(p):
    return "%s-%s.dist-info" % (p["name"], p["version"])


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory,
                                     config_settings=None):
    p = _project()
    d = os.path.join(metadata_directory, _dist_info(p))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write(_metadata(p))
    return _dist_info(p)


def build_wheel(wheel_directory, config_settings=None,
                metadata_directory=None):
    _ensure_stubs()
    p = _project()
    name = "%s-%s-py3-none-any.whl" % (p["name"], p["version"])
    info = _dist_info(p)
    records = []

    def add(zf, arcname, data):
        zf.writestr(arcname, data)
        digest = base64.urlsafe_b64encode(
            hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))

    path = os.path.join(wheel_directory, name)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        pkg = os.path.join(ROOT, "jobd")
        for dirpath, dirnames, filenames in os.walk(pkg):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fn in sorted(filenames):
                if fn.endswith(".py"):
                    full = os.path.join(dirpath, fn)
                    arc = os.path.relpath(full, ROOT).replace(os.sep, "/")
                    with open(full, "rb") as f:
                        add(zf, arc, f.read())
        add(zf, info + "/METADATA", _metadata(p).encode())
        add(zf, info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: jobd_build"
            b"\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        add(zf, info + "/top_level.txt", b"jobd\n")
        records.append(info + "/RECORD,,")
        zf.writestr(info + "/RECORD", "\n".join(records) + "\n")
    return name


def build_sdist(sdist_directory, config_settings=None):
    import tarfile
    _ensure_stubs()
    p = _project()
    base = "%s-%s" % (p["name"], p["version"])
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz") as tf:
        for rel in ("pyproject.toml", "_build", "jobd", "README.md"):
            full = os.path.join(ROOT, rel)
            if os.path.exists(full):
                tf.add(full, arcname=base + "/" + rel,
                       filter=lambda t: None if "__pycache__" in t.name
                       else t)
    return base + ".tar.gz"
