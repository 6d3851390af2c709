"""stats: what running containers use, read from their cgroups where run made
them and from /proc of their processes where it did not, their network bytes
from their own network namespace; docker's columns, keys and units."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from helpers import CLI, cli, wait_for

SUBNET = "10.215.0.0/24"
BRIDGE = ("--network", "bridge", "--subnet", SUBNET)
COLUMNS = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
KEYS = ["BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage", "Name", "NetIO", "PIDs"]
UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}


@pytest.fixture(autouse=True)
def no_services_left(no_leftovers):
    """Containers a failed test left running are removed before the leak checks look."""
    yield
    ids = cli("ps", "-aq").stdout.decode().split()
    if ids:
        cli("rm", "-f", *ids)


def size(text):
    """docker's 20.5MiB or 513kB back to bytes."""
    number, unit = re.fullmatch(r"([0-9.e+]+)([A-Za-z]+)", text).groups()
    return float(number) * UNITS[unit]


def pair(text):
    first, second = text.split(" / ")
    return size(first), size(second)


def stats(*names):
    """stats --no-stream --format json: {name: row}."""
    result = cli("stats", "--no-stream", "--format", "json", *names)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    for row in rows:
        assert sorted(row) == KEYS, row
    return {row["Name"]: row for row in rows}


def detached(root, name, *args):
    result = cli("run", "--root", root, "-d", "--name", name, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def logged(name, text):
    return wait_for(lambda: text in cli("logs", name).stdout, 10)


def test_stats_shows_the_memory_limit_and_usage_growing(root):
    """Under -m 64m the limit is shown; once the container allocates 24 MiB,
    the usage has grown by as much (before it: the control)."""
    detached(root, "mem", "-m", "64m", "/bin/busybox", "sh", "-c",
             "echo waiting; while [ ! -e /tmp/go ]; do busybox sleep 0.05; done; exec /bin/probe hold 24 60")
    assert logged("mem", b"waiting")
    row = stats("mem")["mem"]
    before, limit = pair(row["MemUsage"])
    assert limit == 64 << 20 and row["MemUsage"].endswith(" / 64MiB")
    assert before < 16 << 20, row
    assert cli("exec", "mem", "/bin/busybox", "touch", "/tmp/go").returncode == 0
    assert logged("mem", b"ready")
    row = stats("mem")["mem"]
    after, _ = pair(row["MemUsage"])
    assert after >= before + (20 << 20), (before, row)
    assert float(row["MemPerc"].rstrip("%")) == pytest.approx(after / limit * 100, abs=0.1)


@pytest.mark.parametrize("limits", [("--pids-limit", "50", "-m", "64m"), ()],
                         ids=["from its cgroups", "from /proc (no cgroup)"])
def test_stats_counts_pids_and_cpu(root, limits):
    """Three processes, one of them spinning: PIDS 3 and CPU % well above 0,
    with cgroups and without (then the limit is the host's memory); a quiet
    container beside it is the control (1 pid, about 0% CPU)."""
    detached(root, "busy", *limits, "/bin/busybox", "sh", "-c",
             "busybox sleep 100 & busybox sleep 100 & echo started; exec /bin/probe spin 60")
    detached(root, "quiet", *limits, "/bin/probe", "sleep", "60")
    assert logged("busy", b"started") and logged("quiet", b"ready")
    rows = stats()  # every running container
    assert set(rows) == {"busy", "quiet"}
    assert rows["busy"]["PIDs"] == "3" and rows["quiet"]["PIDs"] == "1"
    assert float(rows["busy"]["CPUPerc"].rstrip("%")) > 20, rows["busy"]
    assert float(rows["quiet"]["CPUPerc"].rstrip("%")) < 5, rows["quiet"]
    usage, limit = pair(rows["busy"]["MemUsage"])
    assert usage > 0
    if not limits:
        with open("/proc/meminfo") as f:
            total = int(f.readline().split()[1]) * 1024
        assert limit == pytest.approx(total, rel=0.001)


def test_network_bytes_grow_after_traffic(root):
    """Half a megabyte each way through a published UDP port: NET I/O (the
    container's eth0, lo left out) grows by as much; before it, next to nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    detached(root, "net", *BRIDGE, "-p", f"{port}:53/udp", "/bin/probe", "serve", "53")
    assert logged("net", b"ready")
    rx, tx = pair(stats("net")["net"]["NetIO"])
    assert rx < 50_000 and tx < 50_000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect(("127.0.0.1", port))
        for _ in range(10):
            s.send(b"x" * 50_000)
            assert s.recv(65535) == b"udp " + b"x" * 50_000
    rx2, tx2 = pair(stats("net")["net"]["NetIO"])
    assert rx2 >= rx + 500_000 and tx2 >= tx + 500_000, (rx2, tx2)


def test_the_table_one_line_a_container_a_stopped_one_in_zeros(root):
    """Not on a terminal: docker's header, then one line a container and the
    end. A stopped container named shows zeros, as docker's does."""
    detached(root, "up", "/bin/probe", "sleep", "60")
    assert cli("run", "--root", root, "--name", "down", "/bin/probe", "pid").returncode == 0
    table = cli("stats", "up", "down")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.decode().splitlines()
    assert re.split(r"\s{3,}", lines[0]) == COLUMNS and len(lines) == 3
    assert re.split(r"\s{3,}", lines[2])[1:] == ["down", "0.00%", "0B / 0B", "0.00%", "0B / 0B",
                                                 "0B / 0B", "0"]
    assert re.split(r"\s{3,}", lines[1])[1] == "up"
    assert set(stats()) == {"up"} and set(json.loads(line)["Name"] for line in cli(
        "stats", "-a", "--format", "json").stdout.decode().splitlines()) == {"up", "down"}


def test_a_missing_container_is_one_line_and_125(root):
    detached(root, "here", "/bin/probe", "sleep", "60")
    result = cli("stats", "here", "nosuch")
    assert result.returncode == 125 and result.stdout == b""
    assert result.stderr.decode().splitlines() == ["minicontainer: container nosuch: no such container"]
    assert cli("stats", "here").returncode == 0  # the control


def test_on_a_terminal_it_redraws_until_ctrl_c_then_exits_0(root):
    detached(root, "tty", "/bin/probe", "sleep", "60")
    master, slave = os.openpty()
    # As a terminal's foreground job has it: SIGINT not ignored, even where
    # this test runs as a background job of a shell (which ignores it).
    proc = subprocess.Popen([*CLI, "stats"], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 15
        # two whole frames: a frame's clear and its table may come in two reads
        while seen.count(b"CONTAINER ID") < 2 and time.monotonic() < deadline:
            seen += os.read(master, 4096)
        assert seen.count(b"\x1b[2J\x1b[H") >= 2 and seen.count(b"CONTAINER ID") >= 2, seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0 and proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        os.close(master)


def test_a_process_name_the_container_chose_cannot_skew_the_figures(root):
    """comm is the container's to choose, ")" and numbers in it too: a process
    named to look like more fields of /proc/PID/stat is still one process,
    and its CPU time is its own (the /proc reading: no cgroup)."""
    shutil.copy(root / "bin" / "probe", root / "bin" / "x) R 9 9 9")
    detached(root, "named", "/bin/x) R 9 9 9", "sleep", "60")
    assert logged("named", b"ready")
    row = stats("named")["named"]
    assert row["PIDs"] == "1" and float(row["CPUPerc"].rstrip("%")) < 5, row
