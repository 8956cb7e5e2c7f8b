#!/bin/sh
# Installs what `make docker-dist` made in DIST into an image built on docker/Dockerfile's
# `base` stage, in two steps so that a new binary leaves the venv's layer cached:
#
#   install-dist.sh venv DIST     the embedded interpreter's venv at /opt/remotemedia/venv,
#                                 from DIST/wheels alone (no package index is asked)
#   install-dist.sh server DIST   the server at /usr/local/bin, checked to resolve libpython
#                                 from this image's Python
set -eu
step=${1:?usage: install-dist.sh venv|server DIST}
dist=${2:?usage: install-dist.sh venv|server DIST}

case $step in
venv)
    python3.11 -m venv /opt/remotemedia/venv
    PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/remotemedia/venv/bin/pip install --no-cache-dir --no-index \
        --find-links "$dist/wheels" -r "$dist/wheels/requirements.txt" remotemedia-nodes
    ;;
server)
    install -m 0755 "$dist/remotemedia-server" /usr/local/bin/remotemedia-server
    # The dynamic loader lists the libraries it resolves and exits (what ldd prints; ldd itself
    # is not in the image). Paths are compared resolved: /lib is /usr/lib on Debian.
    libdir=$(python3.11 -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    libs=$(LD_TRACE_LOADED_OBJECTS=1 /usr/local/bin/remotemedia-server)
    loaded=$(printf '%s\n' "$libs" | sed -n 's/^[[:space:]]*libpython3\.11\.so\.1\.0 => \(.*\) (0x[0-9a-f]*)$/\1/p')
    if [ -z "$loaded" ] || [ "$(readlink -f "$loaded")" != "$(readlink -f "$libdir/libpython3.11.so.1.0")" ]; then
        printf 'remotemedia-server does not load %s/libpython3.11.so.1.0:\n%s\n' "$libdir" "$libs" >&2
        exit 1
    fi
    ;;
*)
    echo "install-dist.sh: unknown step $step (venv or server)" >&2
    exit 2
    ;;
esac
