"""Inventories and vars read by ansible-core itself (the optional extra `distrib[ansible]`).

With ansible-core importable, `Inventory.load` comes here: Ansible's own `InventoryManager`
parses the sources (every inventory plugin, scripts, `plugin:` files, ansible.cfg's
`[inventory]` settings), its `VariableManager` merges the vars (exact precedence, group_vars/
and host_vars/ beside the sources and the playbook, vars plugins), its `DataLoader` decrypts
vault files and `!vault` values, and its `Templar` evaluates Jinja. The result is mapped to
distrib's own records (`distrib.inventory.Inventory`, `Host`, `Group`), so host patterns,
planning and everything after them are unchanged (issue 17).

Templating is done where Ansible does it when it connects: the vars distrib reads (connection,
become and distrib's own host vars) are templated per host with the host's vars and magic vars
(inventory_hostname, group_names, groups, hostvars, playbook_dir); other vars are kept as
`ansible-inventory --list` shows them (vault values as `{"__ansible_vault": ciphertext}`).

Nothing here imports ansible at module level: `available()` tells whether it can be used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distrib.errors import ConfigError

__all__ = ["VaultOptions", "available", "decrypt", "load_inventory"]


@dataclass(frozen=True)
class VaultOptions:
    """Where vault secrets come from, as ansible-playbook's flags say (the CLI maps its flags
    here). ansible.cfg's `vault_password_file` / `vault_identity_list` and
    $ANSIBLE_VAULT_PASSWORD_FILE are added by ansible-core itself, as for ansible-playbook.

    Secrets are read by ansible-core from files, scripts or the terminal: they are never in
    distrib's argv, logs or JSON."""

    password_files: tuple[str, ...] = ()  # --vault-password-file FILE (a file, or a script)
    vault_ids: tuple[str, ...] = ()  # --vault-id [LABEL@]SOURCE; SOURCE a file, script, "prompt"
    ask_vault_pass: bool = False  # --ask-vault-pass: prompt once on the terminal

    @property
    def given(self) -> bool:
        return bool(self.password_files or self.vault_ids or self.ask_vault_pass)


def available() -> bool:
    """Whether ansible-core can be imported here."""
    try:
        return importlib.util.find_spec("ansible.inventory.manager") is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def _ansible_errors(what: str) -> Iterator[None]:
    """ansible-core's errors as one ConfigError line (its message names file and line)."""
    from ansible.errors import AnsibleError

    try:
        yield
    except AnsibleError as exc:
        text = " ".join(str(getattr(exc, "message", None) or exc).split())
        if "no vault secrets" in text:
            text += (
                " (give the vault secret: --vault-password-file, --vault-id, --ask-vault-pass,"
                " ansible.cfg's vault_password_file or $ANSIBLE_VAULT_PASSWORD_FILE)"
            )
        raise ConfigError(f"{what}: {text}") from None


def _plain(value: Any) -> Any:
    """Ansible's tagged values as plain JSON types, the way `ansible-inventory --list` prints
    them (an undecrypted vault value becomes `{"__ansible_vault": ciphertext}`)."""
    from ansible.module_utils.common.json import get_encoder

    return json.loads(json.dumps(value, cls=get_encoder("inventory_legacy")))


def _native(value: Any) -> Any:
    """A templated value as plain Python data, vault values as their plaintext (distrib
    connects with them; ansible-core raises when no secret given opens them)."""
    from ansible.parsing.vault import EncryptedString

    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, EncryptedString):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {_native(k): _native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_native(v) for v in value]
    return _plain(value)


def _vault_secrets(loader: Any, vault: VaultOptions) -> list[Any]:
    import ansible.constants as C  # noqa: N812  (ansible's own spelling)
    from ansible.cli import CLI

    vault_ids = [*C.DEFAULT_VAULT_IDENTITY_LIST, *vault.vault_ids]
    files = list(vault.password_files)
    if not files and C.DEFAULT_VAULT_PASSWORD_FILE:
        files = [C.DEFAULT_VAULT_PASSWORD_FILE]
    for path in files:
        if not os.path.exists(os.path.expanduser(path)):
            raise ConfigError("vault password file not found", file=path)
    with _ansible_errors("vault"):
        secrets: list[Any] = CLI.setup_vault_secrets(
            loader,
            vault_ids=vault_ids,
            vault_password_files=[os.path.expanduser(p) for p in files],
            ask_vault_pass=vault.ask_vault_pass,
            auto_prompt=False,
            initialize_context=False,
        )
    # ansible-core 2.19 decrypts `!vault` values through one process-wide context, which its
    # CLIs set once; distrib may read inventories several times (tests, workflows), so it is
    # replaced on each load rather than initialized (initialize() refuses a second call).
    from ansible.parsing.vault import VaultSecretsContext

    VaultSecretsContext._current = VaultSecretsContext(secrets)
    return secrets


def decrypt(text: str, path: str, vault: VaultOptions) -> str:
    """A vault-encrypted file's plain text (an `-e @FILE` of ansible-playbook), with the
    secrets `vault` names; ConfigError naming `path` when none of them opens it."""
    from ansible.parsing.dataloader import DataLoader

    loader = DataLoader()
    loader.set_vault_secrets(_vault_secrets(loader, vault))
    with _ansible_errors(path):
        plain = loader._vault.decrypt(text.encode())
    try:
        return bytes(plain).decode()
    except UnicodeDecodeError:
        raise ConfigError("the decrypted vault file is not UTF-8 text", file=path) from None


_plugins_ready = False


def _init_plugins() -> None:
    """What ansible's CLIs do first: the plugin loader and the collection finder, without which
    `plugin: ansible.builtin.NAME` (or a collection's) inventories are not recognized."""
    global _plugins_ready
    if not _plugins_ready:
        from ansible.plugins.loader import init_plugin_loader

        init_plugin_loader()
        _plugins_ready = True


def load_inventory(
    sources: Sequence[str],
    playbook_dir: str | None = None,
    *,
    vault: VaultOptions | None = None,
    extra_vars: Mapping[str, Any] | None = None,
) -> Any:
    """Read `sources` with ansible-core; the `distrib.inventory.Inventory` fields it makes.

    `extra_vars` (-e) take part in templating, as in Ansible (`ansible_user: "{{ deploy_user
    }}"` with `-e deploy_user=ops`); they are not added to the hosts' vars (the plan puts them
    over everything itself).

    `playbook_dir`: the playbook's directory (its group_vars/ and host_vars/ count, and
    `playbook_dir` is defined for templates), as with ansible-playbook. Errors (a source
    ansible-core cannot parse into any host, a template that fails, a vault value without its
    secret) are ConfigErrors naming the host and the var."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager
    from ansible.vars.plugins import get_vars_from_inventory_sources

    from distrib import inventory_records as inv_mod

    _init_plugins()
    loader = DataLoader()
    if playbook_dir is not None:
        loader.set_basedir(os.path.abspath(playbook_dir))
    loader.set_vault_secrets(_vault_secrets(loader, vault or VaultOptions()))
    paths = [os.path.expanduser(s) for s in sources if s]
    for path in paths:  # Ansible warns and goes on without it: fewer hosts than meant
        if "," not in path and not os.path.exists(path):
            raise ConfigError("inventory source not found", file=path)
    # Likewise a source no plugin can parse is an error here (as with the built-in reader),
    # not a warning: INVENTORY_ANY_UNPARSED_IS_FAILED, set for this parse only.
    import ansible.constants as C  # noqa: N812

    any_unparsed = C.INVENTORY_ANY_UNPARSED_IS_FAILED
    C.INVENTORY_ANY_UNPARSED_IS_FAILED = True
    try:
        with _ansible_errors("inventory"):
            manager = InventoryManager(loader=loader, sources=paths)
    finally:
        C.INVENTORY_ANY_UNPARSED_IS_FAILED = any_unparsed
    if not manager.hosts and paths:
        raise ConfigError(f"ansible-core read no host from inventory {', '.join(paths)}")
    variables = VariableManager(loader=loader, inventory=manager)
    variables.safe_basedir = playbook_dir is not None  # ansible-playbook's; never the cwd

    groups: dict[str, inv_mod.Group] = {}
    for group in manager.groups.values():
        with _ansible_errors(f"group {group.name!r}"):
            files = get_vars_from_inventory_sources(loader, manager._sources, [group], "all")
        groups[group.name] = inv_mod.Group(
            name=group.name,
            hosts=tuple(h.name for h in group.hosts),
            children=tuple(c.name for c in group.child_groups),
            vars=_plain({**group.get_vars(), **files}),
            source=_source_of(group),
            parents=tuple(p.name for p in group.parent_groups),
            depth=group.depth,
            priority=int(group.priority),
        )
    hosts: dict[str, inv_mod.Host] = {}
    order = {name: i for i, name in enumerate(groups)}
    for host in manager.hosts.values():
        with _ansible_errors(f"host {host.name!r}"):
            variables._extra_vars = {}  # the inventory's view, as ansible-inventory shows it
            shown = variables.get_vars(host=host, include_hostvars=False, stage="all")
            variables._extra_vars = dict(extra_vars or {})  # templates see -e, as in Ansible
            context = variables.get_vars(host=host, include_hostvars=True)
        for internal in C.INTERNAL_STATIC_VARS:
            shown.pop(internal, None)
        templar = Templar(loader=loader, variables=context)
        values: dict[str, Any] = {}
        for key, value in shown.items():
            if inv_mod.used_var(key) and key not in (extra_vars or {}):  # -e replaces it anyway
                with _ansible_errors(f"host {host.name!r}: {key}"):
                    values[key] = _native(templar.template(value))
            else:
                values[key] = _plain(value)
        member_of = sorted(
            (g.name for g in host.get_groups()),
            key=lambda n: (groups[n].depth, groups[n].priority, n, order[n]),
        )
        hosts[host.name] = inv_mod.Host(
            name=host.name, vars=values, groups=tuple(member_of), source=_source_of(host)
        )
    members = {name: tuple(h.name for h in manager.groups[name].get_hosts()) for name in groups}
    return inv_mod.Loaded(hosts, groups, tuple(sources), members)


def _source_of(entity: Any) -> str:
    """Where ansible-core says an inventory entity comes from, else the inventory itself."""
    vars_ = entity.get_vars() if hasattr(entity, "get_vars") else {}
    origin = vars_.get("inventory_file") if isinstance(vars_, Mapping) else None
    return str(origin or "<ansible-core inventory>")
