#!/usr/bin/env bash
# Runs a command with a Docker engine: the one that already answers, or a dockerd started here
# and stopped (with the containerd it starts) when the command ends. The dockerd started here
# has no default bridge and adds no iptables rules: image builds and the composed test service
# use the host's network, so test traffic stays on 127.0.0.1.
#
# Where no engine answers and none can start (dockerd missing, not root, or dockerd failing),
# it prints why and SKIPPED, and exits 0 without running the command; with
# REMOTEMEDIA_REQUIRE_DOCKER=1 that is a failure instead. One run at a time per machine: a
# second waits for the first to stop its engine.
#
#   docker/with-engine.sh make docker-image test-container
set -euo pipefail
command_line="$*"

skip() {
    echo "docker/with-engine.sh: no Docker engine can run here: $1" >&2
    if [ "${REMOTEMEDIA_REQUIRE_DOCKER:-}" = 1 ]; then
        echo "docker/with-engine.sh: REMOTEMEDIA_REQUIRE_DOCKER=1, so this fails" >&2
        exit 1
    fi
    echo "SKIPPED: $command_line"
    exit 0
}

exec 9>"${TMPDIR:-/tmp}/remotemedia-docker-engine.lock"
flock 9

if docker info >/dev/null 2>&1; then
    "$@"
    exit
fi
command -v dockerd >/dev/null || skip "dockerd is not installed (make deploy-tools installs docker.io)"
[ "$(id -u)" = 0 ] || skip "no engine answers and dockerd needs root"

log=$(mktemp -t dockerd.XXXXXX.log)
dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
dockerd_pid=$!
stop_dockerd() {
    kill -TERM "$dockerd_pid" 2>/dev/null || return 0
    wait "$dockerd_pid" || true
    echo "docker/with-engine.sh: stopped the dockerd it started (pid $dockerd_pid)"
}
trap stop_dockerd EXIT

deadline=$((SECONDS + 60))
until docker info >/dev/null 2>&1; do
    kill -0 "$dockerd_pid" 2>/dev/null || skip "dockerd exited at start-up: $(tail -n 5 "$log")"
    [ "$SECONDS" -lt "$deadline" ] || skip "dockerd did not answer within 60 s: $(tail -n 5 "$log")"
    sleep 0.2
done
echo "docker/with-engine.sh: started dockerd (pid $dockerd_pid, log $log)"
"$@"
