"""Property-based tests of `deploy IMAGE` through the real command line, as
root, into the default ./newroot of the directory it runs in (issue 21): fewer
examples than tests/unit/test_archive_properties.py, the same strategies and
invariants (tests/hostile.py)."""
import os
import subprocess

from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import CLI
from hostile import check_corrupt, check_deploy, corruptions, images, whiteout_layers

EXAMPLES = int(os.environ.get("MC_EXAMPLES", 30))


def deploy_cli(parent, root, image):
    """`minicontainer deploy IMAGE` in the root's parent directory: the root is ./newroot."""
    assert root == parent / "newroot"
    result = subprocess.run([*CLI, "deploy", str(image)], cwd=parent, capture_output=True, timeout=60)
    return result.returncode, result.stderr.decode(errors="replace")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=images, with_root=st.booleans())
def test_deploy_of_a_hostile_image_stays_in_newroot(image, with_root):
    kind, layer_lists = image
    check_deploy(deploy_cli, kind, layer_lists, with_root, root_name="newroot")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_lists=whiteout_layers)
def test_whiteouts_of_dot_and_dotdot_never_reach_the_working_directory(layer_lists):
    check_deploy(deploy_cli, "docker-save", layer_lists, True, root_name="newroot")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=corruptions())
def test_a_corrupt_compressed_layer_is_refused_in_one_line_through_the_command_line(case):
    """A layer cut short, flipped or with bytes after its end (its digest its
    own): one line and 125, ./newroot as it was, no temporary file left; or a
    flip no format can see, deployed as meant."""
    check_corrupt(deploy_cli, case, root_name="newroot")
