"""The seccomp compiler (SeccompFilter): a profile in the OCI format becomes the
program libseccomp writes for it, rule by rule as runc adds them. No root: the
filters are compiled and exported (seccomp_export_pfc/bpf), never loaded."""
import ctypes
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _minicontainer import spec, syscalls  # noqa: E402
from _minicontainer.errors import ContainerError  # noqa: E402
from _minicontainer.syscalls import SeccompFilter  # noqa: E402

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64's ABIs and numbers")

# Debian 12's seccomp.json (containers-common 0.50), as podman hands it to the
# runtime for its default capabilities (no CAP_AUDIT_WRITE): the part that
# failed with "seccomp rule for socket: File exists". Two of the socket rules
# are the same rule; socketcall (a 32-bit name) is allowed in the big list.
DEBIAN_SOCKET_RULES = [
    {"names": ["getpid", "socketcall", "waitpid"], "action": "SCMP_ACT_ALLOW"},
    {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
     "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
    {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_NE"}]},
    {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_NE"}]},
    {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_NE"}]},
]


def profile(rules):
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], "syscalls": rules}


def exported(policy, what="bpf"):
    """The program libseccomp writes for the policy: BPF bytes, or its PFC text."""
    compiled = SeccompFilter(policy, no_new_privs=False)
    export = getattr(compiled.lib, f"seccomp_export_{what}")
    export.argtypes = [ctypes.c_void_p, ctypes.c_int]
    read, write = os.pipe()
    try:
        assert export(compiled.ctx, write) == 0
        os.close(write)
        chunks = []
        while chunk := os.read(read, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(read)
    return b"".join(chunks)


def arch_section(pfc, arch):
    """The PFC text of one architecture's part of the filter."""
    text = pfc.decode()
    start = text.index(f"# filter for arch {arch} ")
    end = text.find("# filter for arch ", start + 1)
    return text[start:end if end > 0 else None]


def test_debians_socket_rules_compile():
    exported(profile(DEBIAN_SOCKET_RULES))


def test_a_name_of_another_abi_is_compiled_for_that_abi():
    """socketcall and waitpid exist only on the 32-bit ABI: libseccomp names
    them by negative pseudo-numbers on x86_64, and writes them into the x86
    part; skipping them (as for a name it does not know) lost them."""
    x86 = arch_section(exported(profile(DEBIAN_SOCKET_RULES), "pfc"), "x86")
    assert "$syscall == 102" in x86  # socketcall
    assert "$syscall == 7" in x86  # waitpid


def test_a_name_no_abi_knows_is_skipped_as_runc_skips_it():
    with_unknown = DEBIAN_SOCKET_RULES + [{"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"}]
    assert exported(profile(with_unknown)) == exported(profile(DEBIAN_SOCKET_RULES))


def test_a_rule_that_contradicts_an_earlier_one_fails_as_runc_does():
    """Same system call and comparisons, another action: libseccomp refuses it
    (EEXIST) and so does runc; so does minicontainer, naming the system call."""
    contradiction = [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
                     {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]
    with pytest.raises(ContainerError, match="seccomp rule for getpid: File exists"):
        SeccompFilter(profile(contradiction))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=3), min_size=len(DEBIAN_SOCKET_RULES),
                max_size=len(DEBIAN_SOCKET_RULES)))
def test_repeating_rules_changes_nothing(times):
    """Each rule given once or repeated in place: the same program."""
    repeated = [rule for rule, n in zip(DEBIAN_SOCKET_RULES, times) for _ in range(n)]
    assert exported(profile(repeated)) == exported(profile(DEBIAN_SOCKET_RULES))


@pytest.mark.parametrize("caps", [set(), {"SYS_ADMIN"}, set(spec.capability_numbers())])
def test_minicontainers_own_default_compiles(caps):
    exported(syscalls.default_seccomp(caps))
