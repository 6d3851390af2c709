#!/bin/sh
# Set up minicontainer on a Debian/Ubuntu machine, then run the walkthrough:
# build a static hello program, deploy it into ./newroot, run it.
#
#   ./setup.sh                 as root (PYTHON=python3.13 ./setup.sh for another Python)
#   sudo ./setup.sh            where you are not root (PYTHON=python3.13 sudo -E ./setup.sh)
set -eu
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "setup.sh: needs root: run it as root, or through sudo: sudo ./setup.sh" >&2; exit 1; }

# System packages: a C toolchain with libc's static archive (the demo and the
# tests' probe are static), libcap headers (python-prctl compiles against
# them), libseccomp (the seccomp filter), venv support, and busybox-static
# (a shell inside test containers), curl (the services walkthrough), iproute2
# (its ip makes --network bridge's links), nftables
# (for --outbound; only its tool: Debian does not enable its service), and for
# users without root: uidmap (newuidmap/newgidmap map a subordinate id range)
# and slirp4netns (a user's --network bridge). For the pull tests only: the
# CNCF distribution server (docker-registry), skopeo to push test images into
# it, openssl for its certificates and tokens, zstd for zstd layers; and
# podman, conmon and runc, which run the stock-client tests (podman as Debian
# ships it, runc's own bundle) beside minicontainer.
PACKAGES="gcc libc6-dev libcap-dev libseccomp2 python3-dev python3-venv busybox-static util-linux iproute2 nftables curl uidmap slirp4netns"
TEST_PACKAGES="docker-registry skopeo openssl zstd podman conmon runc"
missing=$(for p in $PACKAGES $TEST_PACKAGES; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The tests start their own registry on a loopback port: not the package's
    # service on port 5000, which systemd starts on install.
    case " $missing " in *" docker-registry "*)
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now docker-registry >/dev/null 2>&1 || true
        fi;;
    esac
fi

# The tool, with its test dependencies, in a virtualenv inside the checkout.
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check '.[test,zstd]'
# sudo's secure_path does not include a virtualenv, but it does include /usr/local/bin.
ln -sf "$PWD/.venv/bin/minicontainer" /usr/local/bin/minicontainer

# The walkthrough.
gcc -static -O2 -o containerclient examples/containerclient.c
minicontainer deploy ./containerclient
minicontainer run ./containerclient
