"""The SSH transport: cipher preference (pure) and what a real sshd negotiates (lab)."""

from __future__ import annotations

import paramiko
import pytest

from distrib.transport import Target, connect
from distrib.transport.client import AeadFirstTransport
from tests.conftest import Lab


def test_aes_gcm_is_offered_first_and_nothing_else_changes() -> None:
    offered = AeadFirstTransport._preferred_ciphers
    assert offered[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    stock = paramiko.Transport._preferred_ciphers  # type: ignore[attr-defined]
    assert sorted(offered) == sorted(stock), "the same ciphers: a server without GCM still connects"
    assert [c for c in offered if "gcm" not in c] == [c for c in stock if "gcm" not in c]


@pytest.mark.lab
def test_a_session_to_openssh_uses_aes_gcm(lab: Lab) -> None:
    state = lab.state()
    host = state.host("node1")
    target = Target(
        name="node1", address=host.address, user="root",
        key_file=state.client_key, known_hosts=state.known_hosts,
    )  # fmt: skip
    session = connect(target)
    try:
        transport = session._transport
        assert transport.local_cipher == transport.remote_cipher == "aes128-gcm@openssh.com"
        assert session.run("true").exit_status == 0
    finally:
        session.close()
