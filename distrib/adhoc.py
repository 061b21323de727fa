"""`distrib push IMAGE... [HOST...]` (issue 18): the targets of a push without a playbook.

Pure: command-line words in, an inventory (or None: use -i) and a host pattern out. A HOST is
written `user@host[:port]` (`[v6addr]:port` too); the `@` is what tells it from an image, whose
only `@` is a digest's (`app@sha256:...`). Such hosts need no inventory: like ssh, they use
~/.ssh/known_hosts and the default keys unless `--known-hosts` / `--private-key` say otherwise,
and an unknown host key is refused as everywhere else (host_key_checking stays `yes`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from distrib import patterns
from distrib.errors import ConfigError
from distrib.inventory import Inventory

WHERE = "<command line>"
# `name@algorithm:hex` (OCI digest grammar): an image pinned by digest, never a host
_DIGEST = re.compile(r"@[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")


@dataclass(frozen=True)
class SshTarget:
    user: str
    address: str
    port: int | None

    @classmethod
    def parse(cls, word: str) -> SshTarget:
        """`user@host[:port]` -> SshTarget; anything else is a ConfigError naming the word."""
        user, _, hostport = word.rpartition("@")
        if hostport.startswith("[") and hostport.endswith("]"):  # [v6addr] with no port
            hostport = hostport[1:-1]
        parsed = patterns.parse_address(hostport) if user else None
        if parsed is None or not user.strip() or any(c.isspace() for c in user):
            raise ConfigError(
                f"not a host: {word!r}",
                hint="write hosts as user@host or user@host:port ([v6addr]:port for IPv6)",
            )
        address, port = parsed
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"not a port number in {word!r}")
        return cls(user, address, port)


def is_host(word: str) -> bool:
    """A `user@host[:port]` word rather than an image reference (`app@sha256:...`)."""
    return "@" in word and not _DIGEST.search(word)


def split_words(words: Sequence[str], need_images: bool = True) -> tuple[list[str], list[str]]:
    """(images, hosts) from `IMAGE... [HOST...]` in the order given (no IMAGE is fine when
    the images come from `--images-from` files: `need_images=False`)."""
    images = [w for w in words if not is_host(w)]
    hosts = [w for w in words if is_host(w)]
    if not images and need_images:
        raise ConfigError("no image to push", hint="distrib push IMAGE... [user@host...]")
    return images, hosts


def inventory_for(
    hosts: Sequence[str], known_hosts: str | None = None, private_key: str | None = None
) -> Inventory:
    """An inventory of the `user@host[:port]` targets, each named by its address (by
    address:port when two share an address)."""
    targets = [SshTarget.parse(h) for h in hosts]
    addresses = [t.address for t in targets]
    entries: dict[str, dict[str, object]] = {}
    for word, target in zip(hosts, targets):
        name = target.address
        if addresses.count(target.address) > 1:
            name = f"{target.address}_{target.port or 22}"
        if name in entries:
            raise ConfigError(f"host {word!r} is given twice")
        host_vars: dict[str, object] = {"ansible_host": target.address, "ansible_user": target.user}
        if target.port is not None:
            host_vars["ansible_port"] = target.port
        if known_hosts:
            host_vars["known_hosts"] = known_hosts
        if private_key:
            host_vars["ansible_ssh_private_key_file"] = private_key
        entries[name] = host_vars
    # JSON is YAML: every value quoted as data, whatever the words hold
    return Inventory.from_yaml_text(json.dumps({"all": {"hosts": entries}}), WHERE)
