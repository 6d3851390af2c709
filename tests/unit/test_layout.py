"""The layout: minicontainer.py in front, the machinery in _minicontainer/,
one module per part, each saying what it owns and what it may import, and
imports that run one way (from the front down to the syscalls)."""
import ast
import subprocess
import sys

from helpers import REPO

PACKAGE = REPO / "_minicontainer"
# From the bottom up: a module may import only modules before it.
ORDER = ["__init__", "constants", "errors", "syscalls", "procs", "spec", "imageformat", "elf", "rootfs",
         "images", "cgroups", "names", "network", "state", "usernet", "oci", "container", "supervise",
         "options",
         "lifecycle", "transfer", "helper", "library"]


def imports_of(path):
    """The package modules a file imports, at its top and inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                found |= {module} if module else {a.name for a in node.names if a.name in ORDER}
                if not module:
                    found.add("__init__")
            elif module.startswith("_minicontainer"):
                found.add(module.split(".", 1)[1] if "." in module else "__init__")
    return found - {""}


def test_every_module_of_the_package_is_in_the_order():
    assert sorted(p.stem for p in PACKAGE.glob("*.py")) == sorted(ORDER)


def test_imports_run_one_way_from_the_front_down():
    upward = {m: sorted(i for i in imports_of(PACKAGE / f"{m}.py") if ORDER.index(i) >= ORDER.index(m))
              for m in ORDER}
    assert {m: i for m, i in upward.items() if i} == {}
    assert "minicontainer" not in {n for m in ORDER for n in imports_of(PACKAGE / f"{m}.py")}


def test_each_module_opens_with_what_it_owns_and_what_it_may_import():
    for m in ORDER[1:]:
        doc = ast.get_docstring(ast.parse((PACKAGE / f"{m}.py").read_text()))
        assert doc and "May import:" in doc and len(doc.splitlines()[0]) > 20, m


def test_no_module_is_over_about_1500_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in [REPO / "minicontainer.py", *PACKAGE.glob("*.py")]}
    assert max(sizes.values()) <= 1550, sizes


def test_importing_the_front_loads_nothing_of_pull_the_registry_oci_or_the_network():
    loaded = subprocess.run([sys.executable, "-c", "import sys, minicontainer; print(' '.join(sys.modules))"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    ours = {m for m in loaded if m.startswith("_minicontainer")}
    assert "_minicontainer.supervise" in ours  # control: the machinery a run needs is there
    assert not ours & {"_minicontainer.images", "_minicontainer.oci", "_minicontainer.network",
                       "_minicontainer.names"}, ours
    assert not {"http.client", "ssl", "urllib.request", "ipaddress", "dnslib"} & set(loaded)


def test_only_the_name_server_imports_dnslib():
    """dnslib is the bridge's name server's alone: loaded by its thread, never
    by importing the package's modules (the network's included)."""
    users = sorted(p.stem for p in PACKAGE.glob("*.py") if "dnslib" in p.read_text())
    assert users == ["names"], users
    loaded = subprocess.run([sys.executable, "-c", "import sys, minicontainer, _minicontainer.network,"
                             " _minicontainer.names; print(' '.join(sys.modules))"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert "_minicontainer.names" in loaded and "dnslib" not in loaded


def test_python_dash_m_minicontainer_is_the_cli():
    result = subprocess.run([sys.executable, "-m", "minicontainer", "--version"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("minicontainer version ")
