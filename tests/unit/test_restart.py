"""Unit tests for --restart: the policy words, and docker's back-off."""
import contextlib

import pytest
from hypothesis import given, settings, strategies as st

from _minicontainer import errors, options, supervise


@pytest.mark.parametrize("text, policy", [
    ("no", ("no", 0)), ("always", ("always", 0)), ("unless-stopped", ("unless-stopped", 0)),
    ("on-failure", ("on-failure", 0)), ("on-failure:5", ("on-failure", 5)),
    ("on-failure:0", ("on-failure", 0))])
def test_restart_policies_as_docker_takes_them(text, policy):
    assert options.parse_restart(text) == policy


@settings(max_examples=500)
@given(st.text(max_size=40))
def test_any_other_word_is_refused_with_one_error(text):
    try:
        options.parse_restart(text)
    except errors.ContainerError as exc:
        assert str(exc).startswith("--restart ")
    else:
        name, _, count = text.partition(":")
        assert name in ("no", "always", "unless-stopped", "on-failure")
        assert not count or name == "on-failure" and count.isascii() and count.isdigit()


def test_restart_conflicts_with_rm_in_dockers_words():
    with pytest.raises(errors.ContainerError) as exc:
        options.check_restart(("always", 0), rm=True, detach=True)
    assert str(exc.value) == "Conflicting options: --restart and --rm"
    assert options.check_restart(("no", 0), rm=True, detach=False) is None


class Entry:
    """An entry's lock and data, as Runs reads them."""

    def __init__(self, stopped=False):
        self.data = {"stopped_by_user": stopped}

    def locked(self):
        return contextlib.nullcontext()

    def reload(self):
        return True


def delays(policy, lasted, ends=8):
    runs, found = supervise.Runs(policy), []
    runs.ran = True
    for _ in range(ends):
        if not runs.again(1, lasted, Entry()):
            break
        found.append(runs.delay)
        runs.count += 1
    return found


def test_the_back_off_doubles_from_100_ms_up_to_a_minute():
    assert delays(("always", 0), 0.5) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8]
    assert delays(("always", 0), 0.5, ends=14)[-1] == 60.0


def test_the_back_off_starts_over_after_ten_seconds_of_running():
    assert delays(("always", 0), 10.0) == [0.1] * 8


def test_on_failure_n_and_a_stop_end_the_restarts():
    assert len(delays(("on-failure", 3), 0.5)) == 3
    runs = supervise.Runs(("on-failure", 0))
    runs.ran = True
    assert not runs.again(0, 1, Entry())  # a success
    assert runs.again(1, 1, Entry())
    assert not runs.again(1, 1, Entry(stopped=True))  # stop, kill, rm -f
    assert not supervise.Runs(("no", 0)).again(1, 1, Entry())
