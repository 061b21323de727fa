"""Put the ansible.posix collection (home of Ansible's `json` stdout callback, which ansible-core
does not ship) into this venv's site-packages, where ansible-core finds collections on sys.path.

tests/test_ansible_json.py compares `distrib --json-format ansible` with that callback's output.
Only ansible.posix is taken from the `ansible` package of the matching release (ansible-core
2.N pairs with ansible N-7), through pip; nothing is done when it is already there.
Run with the venv's python: `.venv/bin/python scripts/ansible_posix.py`.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

PREFIX = "ansible_collections/ansible/posix/"


def main() -> int:
    site = sysconfig.get_paths()["purelib"]
    if os.path.exists(os.path.join(site, PREFIX, "MANIFEST.json")):
        return 0
    try:
        from ansible.release import __version__ as core
    except ImportError:
        print("ansible_posix.py: ansible-core is not installed; nothing to do", file=sys.stderr)
        return 0
    minor = int(core.split(".")[1])
    spec = f"ansible>={minor - 7},<{minor - 6}"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, spec],
            check=True,
        )
        (wheel,) = glob.glob(f"{tmp}/ansible-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(PREFIX)]
            archive.extractall(site, members)
    print(f"ansible.posix ({len(members)} files, from {spec}) in {site}/{PREFIX}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
