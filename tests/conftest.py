"""Shared fixtures: the CLI command line, the static probe, and test roots.

The probe and a template root (skeleton + probe + busybox, deployed with the
real CLI) are built once per session; each test gets its own copy.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, build_static, cli


@pytest.fixture(scope="session")
def probe(tmp_path_factory):
    """The static probe binary, built once."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the probe: run setup.sh")
    return build_static(REPO / "tests" / "probe.c", tmp_path_factory.mktemp("probe") / "probe")


@pytest.fixture(scope="session")
def busybox():
    """busybox-static from the host, for a shell inside containers."""
    path = shutil.which("busybox")
    if path is None:
        pytest.fail("busybox-static is needed: run setup.sh")
    return Path(path)


@pytest.fixture(scope="session")
def template_root(tmp_path_factory, probe, busybox):
    """newroot's skeleton with probe and busybox deployed by the real CLI."""
    root = tmp_path_factory.mktemp("template") / "root"
    shutil.copytree(REPO / "newroot" / "etc", root / "etc")  # what the repository's newroot holds
    result = cli("deploy", "--root", root, probe, busybox)  # makes the rest of the skeleton
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def root(tmp_path, template_root):
    """A fresh container root for one test."""
    path = tmp_path / "root"
    subprocess.run(["cp", "-a", str(template_root), str(path)], check=True)
    return path
