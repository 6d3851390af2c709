"""Property-based tests of deploy against hostile archives and images (issue
21), in-process (no root needed): the strategies and the invariants are in
tests/hostile.py; tests/integration/test_archive_properties.py runs fewer
through the real command line."""
import contextlib
import io
import os

from hypothesis import HealthCheck, example, given, settings, strategies as st

import minicontainer as mc
from _minicontainer import imageformat
from hostile import LNK, REG, SYM, check_corrupt, check_deploy, corruptions, images, whiteout_layers

EXAMPLES = int(os.environ.get("MC_EXAMPLES", 500))


def deploy_in_process(parent, root, image):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = mc.main(["deploy", "--root", str(root), str(image)])
    return code, err.getvalue()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=images, with_root=st.booleans())
# The plan must know an entry where the writer puts it, and what the writer
# keeps; each was refused by the writer midway. d -> a in the root: d/d is a/d,
# and d/s a/s. A directory that holds anything is kept under a symlink.
@example(image=("docker-save", [[('d/d', b'', b'0', '', 420), ('a/d/a', b'', b'0', '', 420)]]),
         with_root=True)
@example(image=("rootfs", [[("d/s", b"", SYM, "/nowhere", 0o777), ("a/s/x", b"", REG, "", 0o644)]]),
         with_root=True)
@example(image=("oci", [[("e/b", b"", REG, "", 0o644)], [("e", b"", SYM, "a", 0o777)],
                        [("e/b/y", b"", REG, "", 0o644)]]), with_root=True)
# .wh.a takes a/f: d/f (d -> a) is no file to link to, whatever the root had there.
@example(image=("docker-save", [[(".wh.a", b"", REG, "", 0o644), ("a/a", b"", REG, "", 0o644),
                                 ("a", b"", LNK, "d/f", 0o644)]]), with_root=True)
def test_no_archive_reaches_outside_the_root_and_a_refusal_changes_nothing(image, with_root):
    kind, layer_lists = image
    check_deploy(deploy_in_process, kind, layer_lists, with_root)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_lists=whiteout_layers)
# d -> a in the root, so d/d is a/d, a file: a/d/a must be refused while planned.
# It was refused by the writer, after d/d was written.
@example([[('d/d', b'', b'0', '', 420), ('a/d/a', b'', b'0', '', 420)]])
# d/.wh..wh..opq empties a (d -> a) and a/a with it: a/a/a is written in a new
# a/a, not in the one removed (the writer's descriptor of it, by name a/a).
@example([[("a/a/a", b"", REG, "", 0o644)],
          [("a/a/a", b"", REG, "", 0o644), ("a", b"", REG, "", 0o644), ("d/.wh..wh..opq", b"", REG, "", 0o644)]])
# d is a file of the lower layer, so d/a is refused: the whiteout d/.wh.d must
# not make the plan forget what d is (it did; the writer then met the file).
@example([[("a", b"", REG, "", 0o644), ("d", b"", REG, "", 0o644)],
          [("a", b"", REG, "", 0o644), ("d/a", b"", REG, "", 0o644), ("d/.wh.d", b"", REG, "", 0o644)]])
def test_whiteouts_and_opaque_markers_anywhere_stay_inside(layer_lists):
    """Whiteouts and opaque markers alone, denser: every '.'/'..' combination,
    in every layer, over a root that has what they name."""
    check_deploy(deploy_in_process, "docker-save", layer_lists, True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=corruptions())
def test_a_corrupt_compressed_layer_is_refused_in_one_line_and_changes_nothing(case):
    """A layer cut short, with bytes flipped or bytes after its end, its digest
    its own: refused in one line with 125 while it is planned (the root as it
    was, no temporary left), or, for a flip the format cannot see, deployed
    as it was meant. It was 'interrupted' and 130 for a cut gzip layer."""
    check_corrupt(deploy_in_process, case)


def test_the_invariants_catch_what_they_are_for(tmp_path):
    """The control: a deploy that touches the root's parent, or changes the
    root and then refuses, fails the checks."""
    import pytest

    def touches_parent(parent, root, image):
        (parent / "PARENT_NOTE").write_text("gone")
        return 0, ""

    def changes_then_refuses(parent, root, image):
        (root / "c").write_text("changed")
        return 125, "minicontainer: deploy: refused\n"

    def says_a_repr(parent, root, image):
        return 125, "minicontainer: internal error: KeyError('x')\n"

    layer = [[("f", b"x", imageformat.tar_module().REGTYPE, "", 0o644)]]
    for fake in (touches_parent, changes_then_refuses, says_a_repr):
        with pytest.raises(AssertionError):
            check_deploy(fake, "rootfs", layer, True)
    check_deploy(deploy_in_process, "rootfs", layer, True)  # and a real deploy passes them
