#!/usr/bin/env bash
# Install what distrib, its lab and its tests need on Debian (run as root). Idempotent: installs
# only what is missing, then (re)installs the project into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/setup.sh: run as root (it installs Debian packages; the lab needs root)" >&2
    exit 1
fi

packages=(docker.io openssh-server openssh-client iproute2 iptables busybox-static zstd pigz
          xz-utils util-linux procps psmisc python3 python3-venv python3-pip
          podman containerd sudo docker-registry apache2-utils patchelf
          chromium zsh fish tmux)
# chromium: the --html report is rendered headless by tests/test_report_files.py;
# zsh and fish: tests/test_completion.py checks the generated completion scripts' syntax
# tmux: the display tests run distrib in a real terminal (tests/test_scale_lab.py)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# python3/venv may come from elsewhere (pyenv): only ask apt for them when python3 lacks venv.
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
    filtered=()
    for pkg in "${missing[@]}"; do
        case "$pkg" in python3|python3-venv|python3-pip) ;; *) filtered+=("$pkg") ;; esac
    done
    missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian packages start their own services under systemd; the lab manages its own
# daemons and does not need them (and on machines without systemd they are not running).

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test,ansible]'   # ansible: tests compare with ansible-core
# Ansible's `json` stdout callback is in the ansible.posix collection, not in ansible-core:
# tests compare `--json-format ansible` with its output (only that collection, into the venv).
.venv/bin/python scripts/ansible_posix.py
echo "distrib installed: $(.venv/bin/distrib --version) in $(pwd)/.venv"

# The lab's engine matrix (issue 14): newer engines than this Debian's, downloaded once into
# /var/cache/distrib-lab/engines (never installed over the system's), so tests never fetch.
# An engine that cannot be had here is reported, and its tests skip with that reason.
.venv/bin/distrib lab engines fetch docker-26 docker-28 docker-28-containerd containerd-2 podman-5 \
    || echo "scripts/setup.sh: some lab engines cannot be had here (see above)" >&2
