#!/usr/bin/env bash
# Quick start: install what is missing, bring up a lab of 3 real hosts (own sshd + dockerd each),
# build the demo images locally, and roll them out with distrib. Run as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
distrib lab up --hosts 3
distrib lab images
distrib run playbooks/demo.yaml -i "${DISTRIB_LAB_DIR:-/var/lib/distrib-lab}/inventory.yaml"
echo
echo "The lab is still up: try 'distrib lab status', 'distrib lab exec node1 -- docker images',"
echo "then 'distrib lab down' to remove it."
