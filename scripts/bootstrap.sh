#!/usr/bin/env bash
# Install and start what hafen needs on this machine, idempotently:
# the Docker engine (when none answers and we are root on Debian), debootstrap,
# the Python environment in .venv/ with the `hafen` command, and with --test the
# test tools (Chromium and its driver, PostgreSQL's server binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_updated=0
apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "error: missing packages ${missing[*]}; install them (as root, on Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    if [ $apt_updated -eq 0 ]; then
        say "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

supervisor=/run/hafen-dockerd-supervisor.pid
engine_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# -- Docker engine ------------------------------------------------------------------------
if ! engine_answers; then
    command -v dockerd >/dev/null || apt_install docker.io
    command -v docker >/dev/null || apt_install docker.io
    if ! engine_answers; then
        say "starting the Docker engine"
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
            systemctl start docker
        elif ! { [ -f "$supervisor" ] && grep -qs dockerd "/proc/$(cat "$supervisor")/cmdline"; }; then
            # No init system restarts the engine here, so a small loop does, as systemd's
            # Restart=always would: dockerd 20.10's swarm manager can panic (seen here, in swarmkit's
            # SetServiceTasksRemove), and the containers and the swarm come back with it.
            mkdir -p /var/log
            nohup sh -c 'while :; do dockerd >>/var/log/hafen-dockerd.log 2>&1;
                echo "hafen: dockerd exited ($?); restarting it" >>/var/log/hafen-dockerd.log; sleep 1; done' \
                >/dev/null 2>&1 &
            echo $! >"$supervisor"
        fi
        for _ in $(seq 1 60); do engine_answers && break; sleep 1; done
        engine_answers || { echo "error: the Docker engine did not start; see /var/log/hafen-dockerd.log" >&2; exit 1; }
    fi
fi

# -- base-image tools ---------------------------------------------------------------------
command -v debootstrap >/dev/null || apt_install debootstrap

# -- Python environment -------------------------------------------------------------------
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: hafen needs Python 3.11 or newer as $python" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$python" -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; "$python" -m venv .venv; }
fi
extras=""
[ $want_test -eq 1 ] && extras="[dev]"
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing hafen$extras into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    touch "$stamp"
fi

# -- test tools ---------------------------------------------------------------------------
if [ $want_test -eq 1 ]; then
    command -v chromedriver >/dev/null || apt_install chromium chromium-driver
    # the server binaries of the tests' throw-away PostgreSQL (tests/pgserver.py); no cluster is started
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_install postgresql
    # the multinode tier's network namespaces, veth pairs and bridge (tests/multinode/cluster.py)
    command -v ip >/dev/null || apt_install iproute2
    command -v nsenter >/dev/null || apt_install util-linux
fi
