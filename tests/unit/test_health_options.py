"""Unit tests for the health check's options and an image's Healthcheck."""
import pytest
from hypothesis import given, settings, strategies as st

from _minicontainer import errors, imageformat, lifecycle, options, procs, rootfs, state


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5s", 1.5), ("0", None),
    ("0s", None), ("1ms", 0.001), (".5s", 0.5), ("1000us", 0.001)])
def test_durations_as_docker_takes_them(text, seconds):
    assert options.parse_duration("--health-interval", text) == seconds


@settings(max_examples=500)
@given(st.text(max_size=20))
def test_any_other_duration_is_refused_with_one_error(text):
    try:
        options.parse_duration("--health-timeout", text)
    except errors.ContainerError as exc:
        assert str(exc).startswith(f"--health-timeout {text}: ")


def test_docker_defaults_and_the_shell_form():
    assert options.health_check(None, cmd="curl -f x") == {
        "test": ["/bin/sh", "-c", "curl -f x"], "interval": 30.0, "timeout": 30.0,
        "start_period": 0.0, "retries": 3}
    assert options.health_check(None) is None


def test_options_override_the_images_fields_one_by_one():
    image = {"Test": ["CMD", "/bin/check", "-q"], "Interval": 5 * 10**9, "Retries": 7}
    assert options.health_check(image, timeout="2s") == {
        "test": ["/bin/check", "-q"], "interval": 5.0, "timeout": 2.0, "start_period": 0.0,
        "retries": 7}
    assert options.health_check(image, cmd="true")["test"] == ["/bin/sh", "-c", "true"]
    assert options.health_check(image, none=True) is None
    assert options.health_check({"Test": ["NONE"]}) is None


@pytest.mark.parametrize("check", [
    {"Test": "x"}, {"Test": [1]}, {"Interval": -1}, {"Interval": True}, {"Retries": 2**31},
    {"Timeout": 5}, [], {"StartPeriod": 1.0}])
def test_a_hostile_image_healthcheck_is_refused(check):
    with pytest.raises(errors.ContainerError) as exc:
        options.health_check(check)
    assert "Healthcheck" in str(exc.value)
    with pytest.raises(ValueError):
        imageformat.check_image_healthcheck(check)


def test_a_pulled_images_healthcheck_is_kept_and_checked():
    config = b'{"config": {"Cmd": ["x"], "Healthcheck": {"Test": ["CMD-SHELL", "true"]}}}'
    assert rootfs.image_settings(config, "config")["Healthcheck"] == {"Test": ["CMD-SHELL", "true"]}
    with pytest.raises(errors.ContainerError):
        rootfs.image_settings(b'{"config": {"Healthcheck": {"Interval": "1s"}}}', "config")


@settings(max_examples=300)
@given(st.one_of(st.lists(st.text(max_size=8), max_size=4), st.tuples(
    st.sampled_from(["CMD", "CMD-SHELL", "NONE", ""]),
    st.lists(st.text(alphabet=st.sampled_from("a /\0\n=-"), max_size=6), max_size=3)).map(
        lambda t: [t[0], *t[1]])))
def test_any_image_test_is_refused_in_one_error_or_runs_without_nul(test):
    """Whatever strings an image's Healthcheck.Test holds: one ContainerError
    naming it, or a command that exec can take (no NUL byte, which failed each
    check with "internal error: ValueError('embedded null byte')")."""
    try:
        check = options.health_check({"Test": test})
    except errors.ContainerError as exc:
        assert "Healthcheck" in str(exc) and "\n" not in str(exc)
        return
    assert check is None or not any("\0" in arg for arg in check["test"])


@pytest.mark.parametrize("health, shown", [
    (None, " (health: starting)"), ({"Status": "starting"}, " (health: starting)"),
    ({"Status": "healthy"}, " (healthy)"), ({"Status": "unhealthy"}, " (unhealthy)")])
def test_ps_says_starting_before_the_first_record_as_inspect_does(tmp_path, health, shown):
    """A container with a health check whose monitor has not yet written its
    first record (its health thread does as it sees the container run, after
    run -d has returned) is "health: starting" in ps, as in inspect: ps said
    nothing of its health (a CI run's test_health found it so). Control: the
    records the thread writes are shown as they are, and a container without a
    check shows no health."""
    import os
    data = {"status": state.RUNNING, "monitor": [os.getpid(), procs.process_start(os.getpid())],
            "started": state.now_iso(), "spec": {"healthcheck": {"interval": 60.0}}}
    if health is not None:
        data["health"] = health
    entry = state.Container(state.Store(str(tmp_path)), "0" * 64, data)
    assert lifecycle.describe_status(entry).endswith(shown)
    assert lifecycle.inspect_data(entry)["State"]["Health"]["Status"] in shown
    data["spec"] = {}
    assert "health" not in lifecycle.describe_status(entry) and "(" not in lifecycle.describe_status(entry)
