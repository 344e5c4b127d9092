"""pip install ./client/python into a venv works offline (--no-index: the
in-tree build backend needs nothing from PyPI; grpcio and protobuf come from
Debian's packages through --system-site-packages)."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(HERE)


def test_pip_installs_offline_into_a_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                    str(venv)], check=True, timeout=60)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-index", "-q",
         "--disable-pip-version-check", PKG],
        capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import jobd, jobd.aio, jobd.v1.jobd_pb2_grpc as g; "
         "print(jobd.__file__); print(g.JobServiceStub)"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    assert str(venv) in out.stdout.splitlines()[0]
