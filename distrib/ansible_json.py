"""`--json-format ansible` (issue 17): a run's result in the layout of Ansible's `json` stdout
callback (ansible.posix.json), so that tools reading Ansible results (ARA, AWX, ansible-runner
consumers) take it.

Each distrib play is one play with one task (the distribute or verify step) whose per-host
results carry Ansible's keys (`changed`, `failed`, `msg`, `unreachable`, `skipped`, `action`)
next to distrib's own (`images`, `states`, `engine`, `bytes_sent`, ...); `stats` counts per
host as Ansible's recap does (`ok` includes changed results). Pure: no I/O. No secrets: the
same fields as distrib's own --json.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from distrib.engine import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE

STAT_KEYS = ("changed", "failures", "ignored", "ok", "rescued", "skipped", "unreachable")


def iso(seconds: float) -> str:
    """A time.time() value as the json callback writes it: `2026-12-02T09:03:48.206156Z`."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def host_result(result: Any, action: str) -> dict[str, Any]:
    """One host's task result: Ansible's keys first, then distrib's."""
    from distrib.report import engine_json

    status = result.status
    entry: dict[str, Any] = {
        "_ansible_no_log": False,
        "action": action,
        "changed": status == CHANGED,
        "failed": status == FAILED,
        "msg": result.message,
    }
    if status == UNREACHABLE:
        entry["unreachable"] = True
    if status == SKIPPED:
        entry["skipped"] = True
        entry["skip_reason"] = result.message
    hint = result.error.hint if getattr(result, "error", None) else None
    entry.update(
        {
            "hint": hint,
            "engine": engine_json(result),
            "images": result.images,
            "states": result.states,
            "bytes_sent": result.bytes_sent,
            "timings": result.timings,
        }
    )
    return entry


def document(
    run: Any,
    plays: Sequence[tuple[str, str]],
    action: str,
    task_name: str,
    times: Sequence[float],
    ended: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The json callback's document for `run`.

    `plays`: (name, "file:line") of each play in the plan; `times`: when each play started
    (time.time()); `ended`: when the run ended. `extra` (backups, removed tags) goes to
    `global_custom_stats`, where Ansible puts a playbook's own set_stats data."""
    stats: dict[str, dict[str, int]] = {}
    out_plays = []
    for index, play in enumerate(run.plays):
        name, path = plays[index] if index < len(plays) else (play.name, "")
        start = times[index] if index < len(times) else ended
        end = times[index + 1] if index + 1 < len(times) else ended
        duration = {"end": iso(end), "start": iso(start)}
        hosts = {}
        for result in play.hosts:
            hosts[result.host] = host_result(result, action)
            counts = stats.setdefault(result.host, dict.fromkeys(STAT_KEYS, 0))
            if result.status in (OK, CHANGED):
                counts["ok"] += 1
            if result.status == CHANGED:
                counts["changed"] += 1
            elif result.status == FAILED:
                counts["failures"] += 1
            elif result.status == UNREACHABLE:
                counts["unreachable"] += 1
            elif result.status == SKIPPED:
                counts["skipped"] += 1
        task = {"duration": duration, "id": str(uuid.uuid4()), "name": task_name, "path": path}
        out_plays.append(
            {
                "play": {"duration": duration, "id": str(uuid.uuid4()), "name": name, "path": path},
                "tasks": [{"hosts": hosts, "task": task}] if hosts else [],
            }
        )
    return {
        "custom_stats": {},
        "global_custom_stats": dict(extra or {}),
        "plays": out_plays,
        "stats": stats,
    }
