"""Action plugin of distrib.images.distribute: one distrib rollout for the play's batch of
hosts (see plugin_utils/rollout.py), each host's task reporting its own outcome."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.distrib.images.plugins.plugin_utils import rollout

CHOICES = {
    "compression": ("gzip", "zstd", "xz", "none", "auto"),
    "delta": ("auto", "off"),
    "fanout": ("direct", "relay", "auto"),
    "transfer": ("auto", "staged", "stream"),
    "local_pull": ("missing", "always", "never"),
}
OPTIONS = ("level", "relay_width", "relay_roots", "uplink", "remote_tmp", "keep", "platform")


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _requires_connection = False  # distrib connects to the hosts itself
    _VALID_ARGS = frozenset(
        ("images", "images_from", "verify", "distrib_command", *CHOICES, *OPTIONS)
    )
    VERIFY_ONLY = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result: dict[str, Any] = super().run(tmp, task_vars)
        args = self._task.args
        command = self.command(args)
        batch = list(task_vars.get("ansible_play_batch") or [task_vars["inventory_hostname"]])
        if self._task.run_once:  # one result for all: still one run over the batch
            batch = list(task_vars.get("ansible_play_hosts") or batch)
        if self._play_context.check_mode and not self.VERIFY_ONLY:
            command.append("--check")
        key = "\0".join([str(os.getppid()), str(self._task._uuid), *sorted(batch), *command])

        def compute() -> dict[str, Any]:
            hostvars = task_vars["hostvars"]
            defaults = self.defaults()
            hosts = {h: rollout.host_entry(hostvars[h], defaults) for h in batch}
            distrib = args.get("distrib_command")
            return rollout.run_distrib(command, hosts, list(distrib) if distrib else None)

        outcome = rollout.once(key, compute)
        if self._task.run_once:  # one task result stands for every host: the summary
            result.update(rollout.summary(outcome, batch, self.VERIFY_ONLY))
        else:
            host = task_vars["inventory_hostname"]
            result.update(rollout.task_result(outcome, host, self.VERIFY_ONLY))
        return result

    def defaults(self) -> dict[str, Any]:
        """What applies to every host whose vars do not set it: the play's `remote_user`, -u,
        --private-key, -T, -k, -K and ansible.cfg (become from the task's keywords).

        Not this task's play context: Ansible has overridden it with the current host's own
        vars (its ansible_user, ansible_password...), which must not leak to the other hosts.
        The worker process keeps the play context from before that override."""
        from ansible import constants as C

        base = getattr(multiprocessing.current_process(), "_play_context", None)
        if base is None:  # not in a worker process (a test): the command line and config only
            from ansible import context

            cli = context.CLIARGS
            remote_user = cli.get("remote_user") or C.DEFAULT_REMOTE_USER
            key, timeout = cli.get("private_key_file"), cli.get("timeout")
            password = become_pass = None
        else:
            remote_user, key, timeout = base.remote_user, base.private_key_file, base.timeout
            password, become_pass = base.password, base.become_pass
        values: dict[str, Any] = {
            "ansible_user": remote_user,
            "ansible_private_key_file": key,
            "ansible_timeout": timeout,
            "ansible_password": password,
            "ansible_become": True if self._task.become else None,
            "ansible_become_user": self._task.become_user if self._task.become else None,
            "ansible_become_password": become_pass,
        }
        if not C.HOST_KEY_CHECKING:
            values["host_key_checking"] = "off"
        return values

    def command(self, args: dict[str, Any]) -> list[str]:
        images = args.get("images") or []
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise AnsibleActionFail("images must be a list of image references")
        if not images and not args.get("images_from"):
            raise AnsibleActionFail("images (or images_from) is required")
        argv = ["push", *[str(i) for i in images]]
        for name, choices in CHOICES.items():
            if args.get(name) is not None:
                if args[name] not in choices:
                    raise AnsibleActionFail(f"{name} must be one of {', '.join(choices)}")
                argv += [f"--{name.replace('_', '-')}", str(args[name])]
        for name in OPTIONS:
            if args.get(name) is not None:
                argv += [f"--{name.replace('_', '-')}", str(args[name])]
        sources = args.get("images_from") or []
        for source in [sources] if isinstance(sources, str) else sources:
            argv += ["--images-from", str(source)]
        if args.get("verify") is not None:
            argv.append("--verify" if self._bool(args["verify"]) else "--no-verify")
        return argv

    @staticmethod
    def _bool(value: Any) -> bool:
        from ansible.module_utils.parsing.convert_bool import boolean

        return bool(boolean(value, strict=True))
