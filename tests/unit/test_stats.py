"""Unit tests for stats' figures: docker's units, cgroup numbers, a stopped row."""
from hypothesis import given, settings, strategies as st

from _minicontainer import lifecycle


def test_sizes_in_dockers_units():
    assert [lifecycle.human_decimal(n) for n in (0, 648, 1050, 12_345_678, 2_000_000_000)] == [
        "0B", "648B", "1.05kB", "12.3MB", "2GB"]
    assert [lifecycle.human_binary(n) for n in (0, 1536 << 10, 64 << 20, 8337018880)] == [
        "0B", "1.5MiB", "64MiB", "7.764GiB"]


@settings(max_examples=300)
@given(st.text(max_size=12))
def test_a_cgroup_number_is_ascii_digits_or_none(text):
    """"max", blanks, other scripts' digits: never a number, never an exception."""
    value = lifecycle.number_in(text)
    assert value is None or (text.strip().isascii() and value == int(text.strip()))


class Entry:
    id, name = "ab" * 32, "gone"


def test_a_stopped_container_is_all_zeros():
    row = lifecycle.stats_row(Entry(), "gone", None, None, 1.0)
    assert row == {"BlockIO": "0B / 0B", "CPUPerc": "0.00%", "Container": "gone", "ID": "ab" * 6,
                   "MemPerc": "0.00%", "MemUsage": "0B / 0B", "Name": "gone", "NetIO": "0B / 0B",
                   "PIDs": "0"}


def test_cpu_percent_is_cpu_time_over_wall_time():
    before = {"cpu_ns": 0}
    after = {"cpu_ns": 500_000_000, "memory": 1 << 20, "memory_limit": 4 << 20, "pids": 2,
             "net_rx": 1000, "net_tx": 0, "blk_read": None, "blk_write": None}
    row = lifecycle.stats_row(Entry(), "x", before, after, 0.5)
    assert (row["CPUPerc"], row["MemPerc"], row["MemUsage"], row["NetIO"], row["PIDs"]) == (
        "100.00%", "25.00%", "1MiB / 4MiB", "1kB / 0B", "2")
