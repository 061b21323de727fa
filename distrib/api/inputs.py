"""A run's inputs read once, before anything connects: the inventory (with vault), -e, ansible.cfg
under the flags, the plan, and the workstation's images. Errors are ConfigErrors naming the file
and line; nothing here touches a host."""

from __future__ import annotations

import functools
import os
import sys
from typing import IO, Any

from distrib.api.options import Options
from distrib.errors import ConfigError

_cfg_cache: list[Any] = []


def ansible_cfg() -> Any:
    """ansible.cfg (distrib.ansible_cfg), read once: its settings are defaults under flags."""
    from distrib import ansible_cfg as cfg

    if not _cfg_cache:
        _cfg_cache.append(cfg.load())
    return _cfg_cache[0]


def default_inventory() -> list[str]:
    env = os.environ.get("DISTRIB_INVENTORY") or os.environ.get("ANSIBLE_INVENTORY")
    return [p for p in env.split(",") if p] if env else []


def has_inventory(options: Options) -> bool:
    """Whether -i, $DISTRIB_INVENTORY or ansible.cfg names an inventory."""
    return bool(options.inventory or default_inventory() or ansible_cfg().inventory)


def warn(message: str) -> None:
    print(f"[WARNING]: {message}", file=sys.stderr)


class Inputs:
    """The inputs of one run; -e is read once (a vault prompt is asked once)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._extra_vars: dict[str, Any] | None = None

    def inventory(self) -> Any:
        from distrib.inventory import Inventory

        options = self.options
        if options.inventory_object is not None:  # push's user@host targets
            return options.inventory_object
        sources = list(options.inventory) or default_inventory() or ansible_cfg().inventory
        if not sources:
            raise ConfigError(
                "no inventory given", hint="pass -i INVENTORY (or set DISTRIB_INVENTORY)"
            )
        return Inventory.load(
            sources, options.playbook_dir, vault=options.vault, extra_vars=self.extra_vars()
        )

    def extra_vars(self) -> dict[str, Any]:
        """-e; vault-encrypted @FILEs are opened with the vault options through ansible-core,
        as ansible-playbook does."""
        from distrib.extravars import parse_all

        if self._extra_vars is None:
            vault = self.options.vault
            decrypt = None
            if vault is not None:
                from distrib import ansible_core

                if not ansible_core.available():
                    from distrib.inventory import EXTRA_HINT

                    raise ConfigError(f"vault options need ansible-core: {EXTRA_HINT}")
                decrypt = functools.partial(_decrypt, vault=vault)
            self._extra_vars = parse_all(list(self.options.extra_vars), decrypt)
        return self._extra_vars

    def forks(self, playbook: Any) -> int | None:
        """-f, else ansible.cfg's forks for plays that keep the default (a play's forks: wins)."""
        from distrib.playbook import DEFAULT_FORKS

        if self.options.forks is not None:
            return int(self.options.forks)
        forks: int | None = ansible_cfg().forks
        if forks is not None and all(p.forks == DEFAULT_FORKS for p in playbook.plays):
            if forks < 1:
                origin = ansible_cfg().settings["forks"].origin
                raise ConfigError(f"forks in {origin} must be >= 1")
            return forks
        return None

    def flag_defaults(self) -> dict[str, Any]:
        """-u, --private-key, -T, -b, --become-user as the vars they stand for (lowest
        precedence); ansible.cfg's remote_user, private_key_file, timeout, become... under
        them. As in Ansible, --become-user alone does not turn become on."""
        o = self.options
        flags = {
            "ansible_user": o.user,
            "ansible_private_key_file": o.private_key,
            "ansible_timeout": o.timeout,
            "ansible_become": o.become,
            "ansible_become_user": o.become_user,
        }
        if o.timeout is not None and not o.timeout > 0:
            raise ConfigError("-T/--timeout must be a number of seconds above 0")
        defaults: dict[str, Any] = ansible_cfg().host_defaults()
        return {**defaults, **{k: v for k, v in flags.items() if v is not None}}

    def plan(self, playbook: Any) -> Any:
        from distrib.patterns import read_limit
        from distrib.plan import make_plan

        options = self.options
        if options.forks is not None and options.forks < 1:
            raise ConfigError("--forks must be at least 1")
        inventory = self.inventory()
        limit = read_limit(options.limit) if options.limit else None
        return make_plan(
            inventory,
            playbook,
            limit=limit,
            forks=self.forks(playbook),
            strict=options.strict,
            warn=warn,
            extra_vars=self.extra_vars(),
            defaults=self.flag_defaults(),
        )


def _decrypt(text: str, path: str, vault: Any) -> str:
    from distrib import ansible_core

    return ansible_core.decrypt(text, path, vault)


def local_images(playbook: Any, out: IO[str], check: bool = False) -> dict[Any, Any]:
    """Identity of every image of the playbook in the local docker, after the plays'
    `local_pull`s; a missing one is a config error naming the playbook line, raised before
    any connection."""
    from distrib import archive as archive_mod
    from distrib import archived
    from distrib.playbook import local_pulls

    archived.load_local(playbook.plays, out)  # local_load: true (asked for)
    refs = list(
        dict.fromkeys(
            s.ref for p in playbook.plays for s in p.images if s.archived is None or p.local_load
        )
    )
    found, missing = archive_mod.inspect_local(refs)
    pulls = local_pulls(playbook.plays, missing, check)
    for spec, platform in pulls:
        print(
            f"pulling {spec.ref}" + (f" ({platform})" if platform else "") + " on this workstation",
            file=out,
            flush=True,
        )
        where = f"{spec.where.file}:{spec.where.line}" if spec.where.line else spec.where.file
        archive_mod.pull_local(spec.ref, platform, where)
    if pulls:
        found, missing = archive_mod.inspect_local(refs)
    if missing:
        spec = next(s for p in playbook.plays for s in p.images if s.ref == missing[0])
        raise ConfigError(
            f"image {missing[0]} is not in the local docker"
            + (f" (nor {', '.join(map(str, missing[1:]))})" if len(missing) > 1 else ""),
            file=spec.where.file,
            line=spec.where.line or None,  # 0: given on the command line
            hint=archived.missing_hint(missing[0])
            or "build or pull it on this workstation first (docker images lists what "
            "exists), or let distrib pull it: local_pull: missing (push --local-pull missing)",
        )
    return {**found, **archived.local_images(playbook.plays, out)}


def keep_cache_in_bounds() -> None:
    """The cache's size limit ($DISTRIB_CACHE_MAX, default 20G), enforced after every run."""
    from distrib import cache

    try:
        cache.prune(cache.max_bytes())
    except (OSError, ConfigError) as exc:
        print(f"WARNING: cache not pruned: {exc}", file=sys.stderr)
