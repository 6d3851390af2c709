"""Kubernetes pods: containerd's CRI plugin drives minicontainer as a kubelet
would, through conformance/cri.sh (a private containerd 1.6 with its CRI
plugin, the runc v2 shim with BinaryName set to the runtime, a CNI bridge,
offline pause and busybox images, and a CRI v1 client: three pods, their
namespaces seen by ExecSync, resources in the cgroups, the CRI log, SIGTERM
and SIGKILL stops, removal, nothing left; conformance/CRI-NOTES.md lists the
steps).

runc runs the same harness first, in the same test: it is the reference and
the positive control (a step that fails under runc is the harness's fault, not
the runtime's), and minicontainer must pass exactly the steps runc passes.
cri.sh installs what it needs (containerd, the CNI plugins, gcc for the static
pause) and keeps its CRI client's grpcio venv in /var/tmp.
"""
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import CLI, REPO

CRI_SH = REPO / "conformance" / "cri.sh"


@pytest.fixture
def work():
    """cri.sh's work parent: short (containerd's sockets live in it, and a
    socket's path has at most 107 bytes), and empty again at the end."""
    path = Path(tempfile.mkdtemp(prefix="mc-cri-", dir="/tmp"))
    yield path
    left = list(path.iterdir())
    shutil.rmtree(path)
    assert not left, left


def harness(runtime, work):
    """cri.sh's verdict for `runtime`: (exit status, output, the steps passed,
    the steps failed)."""
    proc = subprocess.run([str(CRI_SH), str(runtime)], capture_output=True, text=True,
                          timeout=900, env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                            "/usr/bin:/sbin:/bin", "CONFORMANCE_TMP": str(work)})
    out = proc.stdout + proc.stderr
    # a step's name, without what changes from run to run (ids, paths, names
    # of veths and bridges, figures)
    passed = [re.sub(r"\(.*?\)|\[.*?\]|\S*/\S*|\S*\d\S*|\bcri\w{6}\b", "", l[5:]).split()
              for l in out.splitlines() if l.startswith("PASS ")]
    failed = [l for l in out.splitlines() if l.startswith("FAIL ")]
    return proc.returncode, out, passed, failed


@pytest.fixture
def wrapper(tmp_path):
    """This checkout's command line as an executable named minicontainer,
    writing each verb it is given to a file."""
    calls = tmp_path / "calls"
    path = tmp_path / "bin" / "minicontainer"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n"
                    f"printf '%s\\n' \"$*\" >> '{calls}'\n"
                    "exec " + " ".join(f"'{a}'" for a in CLI) + ' "$@"\n')
    path.chmod(0o755)
    return path, calls


def test_a_kubelets_pods_run_under_minicontainer_as_under_runc(wrapper, work):
    runc = shutil.which("runc")
    assert runc, "runc is not installed (setup.sh installs it)"
    rc, out, reference, failed = harness(runc, work)
    assert rc == 0 and not failed and len(reference) >= 90, out[-3000:]

    path, calls = wrapper
    rc, out, passed, failed = harness(path, work)
    assert rc == 0 and not failed, out[-3000:]
    assert passed == reference, out[-3000:]
    assert re.search(r"== cri: \d+ passed, 0 failed", out), out[-3000:]
    # containerd's shim ran this checkout's runtime for every pod's verbs
    verbs = {word for line in calls.read_text().splitlines() for word in line.split()}
    assert {"create", "start", "exec", "kill", "delete", "update"} <= verbs, sorted(verbs)
