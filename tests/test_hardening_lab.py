"""Issue 19 against real hosts (sshd + dockerd lab): a host that floods its output, a command
whose data never pauses, ProxyCommand to a real sshd, and two runs at once against one host."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import pytest

from distrib import transport
from distrib.errors import HostError
from distrib.inventory import Inventory
from distrib.plan import make_plan
from distrib.playbook import Playbook
from tests.conftest import Lab

pytestmark = pytest.mark.lab


def target_of(lab: Lab, host: str = "node1") -> transport.Target:
    inventory = Inventory.load([str(lab.inventory)])
    plan = make_plan(inventory, Playbook.from_text(f"- hosts: {host}\n  images: [demo/web:1.0]\n"))
    return plan.hosts[0].target


def test_a_flooding_host_is_stopped_at_the_output_cap(lab: Lab) -> None:
    session = transport.connect(dataclasses.replace(target_of(lab), max_output=1_000_000))
    try:
        started = time.monotonic()
        with pytest.raises(HostError) as info:
            session.run("yes", timeout=120)
        assert time.monotonic() - started < 15
        assert str(info.value).startswith(
            "remote command sent more than 1,000,000 bytes of output, stopped: yes"
        )
        assert "max_command_output" in str(info.value)
        assert session.run("echo still usable", timeout=30).stdout == "still usable\n"
    finally:
        session.close()


def test_the_deadline_holds_while_data_keeps_arriving(lab: Lab) -> None:
    session = transport.connect(target_of(lab))
    received = [0]

    def discard(block: bytes) -> None:
        received[0] += len(block)

    try:
        started = time.monotonic()
        with pytest.raises(HostError, match=r"remote command timed out after 2s: cat /dev/zero"):
            session.download("cat /dev/zero", discard, timeout=2)
        assert time.monotonic() - started < 10
        assert received[0] > 1_000_000  # data was flowing the whole time
    finally:
        session.close()


RELAY = (
    "import os, socket, threading; s = socket.create_connection(('{address}', {port})); "
    "threading.Thread(target=lambda: [s.sendall(b) for b in iter(lambda: os.read(0, 65536), b'')],"
    " daemon=True).start(); [os.write(1, b) for b in iter(lambda: s.recv(65536), b'')]"
)


def test_proxy_command_reaches_a_real_host(lab: Lab, tmp_path: Path) -> None:
    real = target_of(lab)
    config = tmp_path / "ssh_config"
    relay = f'{sys.executable} -c "{RELAY.format(address=real.address, port=real.port)}"'
    # `far` resolves nowhere: the session can only come through the ProxyCommand
    config.write_text(f"Host far\n  HostName nowhere.invalid\n  ProxyCommand {relay}\n")
    # its host key is recorded under that name: a first contact, accepted into a new file
    far = dataclasses.replace(real, address="far", ssh_config=str(config),
                              host_key_checking="accept-new",
                              known_hosts=str(tmp_path / "known_hosts"))  # fmt: skip
    session = transport.connect(far)
    try:
        assert session.run("hostname", timeout=30).ok
    finally:
        session.close()
