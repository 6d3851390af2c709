"""The leak checks look at what the test made, and only at that: a leftover
of the test's own is found, one of another user's container is not (the
suite must pass on a machine where other containers come and go)."""
import os
import subprocess
import tempfile

from helpers import container_cgroups, host_mounts


def cgroup(name):
    path = f"/sys/fs/cgroup/pids/{name}"
    os.mkdir(path)
    return path


def test_a_cgroup_named_after_a_process_of_the_test_is_its_own_and_anothers_is_not():
    mine = subprocess.Popen(["sleep", "30"])
    ours_path = cgroup(f"minicontainer-{mine.pid}-abcdef")
    try:
        # Another user's container: a cgroup named after a process this test did
        # not start (this test's own Popen is recorded, so take a pid it did not
        # start: its own parent's, pytest's, which no test starts).
        foreign_path = cgroup(f"minicontainer-{os.getppid()}-abcdef")
        try:
            found = container_cgroups()
            assert ours_path in found and foreign_path not in found
            assert foreign_path in container_cgroups(everyone=True)  # control: it is there
        finally:
            os.rmdir(foreign_path)
    finally:
        os.rmdir(ours_path)
        mine.kill()
        mine.wait()


def test_a_cgroup_named_after_a_container_of_the_test_is_its_own():
    path = cgroup("minicontainer-leaktest-named")
    try:
        assert path not in container_cgroups()
        subprocess.run(["true", "--name", "leaktest-named"])  # the test names a container so
        assert path in container_cgroups()
    finally:
        os.rmdir(path)


def test_a_mount_under_the_test_directory_is_its_own_and_one_elsewhere_is_not(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    elsewhere = tempfile.mkdtemp(prefix="leaktest-")
    subprocess.run(["mount", "-t", "tmpfs", "none", mine], check=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "none", elsewhere], check=True)
        try:
            assert str(mine) in host_mounts() and elsewhere not in host_mounts()
            assert elsewhere in host_mounts(everyone=True)  # control: it is mounted
        finally:
            subprocess.run(["umount", elsewhere], check=True)
    finally:
        subprocess.run(["umount", mine], check=True)
        os.rmdir(elsewhere)

