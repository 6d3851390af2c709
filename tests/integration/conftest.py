"""Integration fixtures: root only, and a leak check around every test that
looks only at what the test made (helpers.Ownership), so that the suite
passes on a machine where other containers come and go."""
import os
import subprocess
from pathlib import Path

import pytest

import helpers
from helpers import (Container, Ownership, cli, library_door, container_cgroups, host_mounts, kept_network,
                     live_monitors, network_leftovers, processes_rooted_under, wait_for)
import registry_fixture

# The registry fixtures (docker-registry on a loopback port; images pushed by
# skopeo), for the pull tests: a test names the one it needs.
registry = registry_fixture.registry
tls_registry = registry_fixture.tls_registry
htpasswd_registry = registry_fixture.htpasswd_registry
token_registry = registry_fixture.token_registry
busybox_image = registry_fixture.busybox_image
index_image = registry_fixture.index_image


@pytest.fixture(autouse=True)
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: real namespaces, mounts and cgroups")


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch, needs_root):
    """A state directory of the test's own, for the CLI it starts; the host's
    /run/minicontainer is never touched."""
    path = tmp_path / "state"
    monkeypatch.setenv("MINICONTAINER_STATE", str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def network_pruned():
    """The bridge that --network bridge tests leave for the next container is
    removed at the end, by the command users have for it; then nothing of
    minicontainer's network is left on the host."""
    yield
    if os.geteuid() == 0:
        pruned = cli("network", "prune")
        if pruned.returncode != 0 and network_leftovers(everyone=True):
            return  # another user's containers are on the bridge: it is kept for them
        assert pruned.returncode == 0, pruned.stderr
        assert kept_network() == [], kept_network()


@pytest.fixture(autouse=True)
def ownership(tmp_path, state_dir, monkeypatch):
    """What this test makes: every process it starts is recorded (see
    helpers.Ownership), and the leak checks look at nothing else."""
    own = Ownership(tmp_path, state_dir)
    popen_init = subprocess.Popen.__init__

    def recording_init(self, args, *rest, **kwargs):
        popen_init(self, args, *rest, **kwargs)
        own.started(self.pid, args)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    monkeypatch.setattr(helpers, "current", own)
    return own


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path, needs_root, state_dir, ownership):
    """Every test, passing or not, leaves the host's mounts, processes and
    cgroups as it found them, and no container's monitor running: those it
    made itself (see helpers.Ownership)."""
    before = host_mounts()
    groups_before = container_cgroups()
    network_before = network_leftovers()
    yield
    assert wait_for(lambda: not live_monitors(state_dir), 5.0), \
        f"monitors left running: {live_monitors(state_dir)}"
    assert wait_for(lambda: not processes_rooted_under(tmp_path), 2.0), \
        f"container processes left: {processes_rooted_under(tmp_path)}"
    assert host_mounts() == before, "mounts left on the host"
    assert wait_for(lambda: container_cgroups() == groups_before, 2.0), \
        f"cgroups left: {sorted(set(container_cgroups()) - set(groups_before))}"
    assert wait_for(lambda: network_leftovers() == network_before, 2.0), \
        f"network state left: {network_leftovers()}"
    temps = [p for p in Path(tmp_path).rglob(".minicontainer-tmp.*")]
    assert not temps, f"temporary files left: {temps}"


@pytest.fixture
def start():
    """start(root, *args) -> Container, killed after the test whatever happens."""
    started = []

    def _start(root, *args, **kwargs):
        started.append(Container(root, *args, **kwargs))
        return started[-1]

    yield _start
    for c in started:
        c.close()


@pytest.fixture(params=["cli", "library"])
def door(request):
    """door("run", ...): the command line, or the library behind the same options
    (the isolation, privilege and escape tests go through both)."""
    return cli if request.param == "cli" else library_door


@pytest.fixture
def run(root):
    """run(*args) runs the CLI's `run` in this test's root and returns the result."""
    return lambda *args, **kw: cli("run", "--root", root, *args, **kw)
