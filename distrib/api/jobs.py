"""A rollout's engine jobs, one per play: the images (each host's platform), the codec (each
host's, with `compression: auto`), the archive (saved and compressed once, on first use) and
the layer store (`delta: auto`). Hosts are probed first only when a play needs their facts."""

from __future__ import annotations

import dataclasses
from typing import IO, Any

from distrib.api.options import Connector
from distrib.engine import Job
from distrib.plan import Plan, PlayPlan


def play_jobs(
    plan: Plan,
    found: dict[Any, Any],
    connect: Connector,
    kept: Any,
    out: IO[str],
    check: bool,
) -> dict[int, Job]:
    """Each play's Job (`others`: hosts whose codec or platform differs get theirs)."""
    from distrib import archived

    jobs = {}
    for index, play_plan in enumerate(plan.plays):
        play = play_plan.play
        images = tuple(found[s.ref] for s in play.images)
        # a multi-platform source (issue 18): every host's platform is probed first; with
        # local_pull (and no platform:) the workstation pulls each platform the hosts need
        pulls = play.local_pull != "never" and not play.platform
        multi = archived.is_multi_platform(images)
        probe = play.compression == "auto" or multi or pulls
        facts = probe_hosts(play_plan, connect, kept) if probe else {}
        if pulls:
            from distrib import platformpull

            hosts_on = [archived.host_platform(f) for f in facts.values()]
            refresh = play.local_pull == "always" and not check
            images = platformpull.with_platforms(images, hosts_on, refresh, out)
        per_host = auto_codecs(play, facts) if play.compression == "auto" else {}
        codec = main_codec(per_host) if per_host else play.compression
        if play.compression == "auto":
            print(f"compression auto for play {play.name!r}: {codecs_line(per_host)}", file=out)
        main, others = archived.host_jobs(
            [h.name for h in play_plan.hosts],
            images,
            facts,
            per_host,
            codec,
            lambda c, i: play_job(play, c, i, facts, out, check),  # noqa: B023
        )
        jobs[index] = dataclasses.replace(main, others=others) if others else main
    return jobs


def play_job(
    play: Any, codec: str, images: tuple[Any, ...], facts: dict[str, Any], out: IO[str], check: bool
) -> Job:
    """A play's job in one codec: its archive (prepared, built on first use) and layer store."""
    from distrib import archive as archive_mod
    from distrib import archived
    from distrib.engine import CHECK
    from distrib.layerstore import LayerStore

    if not check and any(i.origin for i in images):  # issue 18: read from image archives
        level = play.level if codec in ("gzip", "zstd") else None
        source = LayerStore(codec=archived.store_codec(codec), level=level)
        archived.fill(source, images, out)
        images = archived.with_sizes(source, images)
    store = layer_store(play, codec, images, check)
    if check:  # read-only everywhere: use the cached archive's size if there is one
        cached = archive_mod.find_cached(images, codec, play.level)
        return Job(images, cached, play.verify, CHECK, codec, facts, store)
    level = play.level if codec in ("gzip", "zstd") else None
    produce = archived.producer(
        images, lambda: LayerStore(codec=archived.store_codec(codec), level=level)
    )
    archive = archive_mod.prepare(images, codec, play.level, producer=produce)
    return Job.deploy(archive, verify=play.verify, facts=facts, store=store)


def layer_store(play: Any, codec: str, images: tuple[Any, ...], check: bool) -> Any:
    """`delta: auto` with gzip or zstd: every layer compressed once, ever, into the layer store;
    each docker host is then sent only the layers it lacks, in loading steps (xz/none plays
    ship whole archives)."""
    from distrib.layerblobs import BLOB_SUFFIXES
    from distrib.layerstore import LayerStore

    if play.delta != "auto" or codec not in BLOB_SUFFIXES:
        return None
    store = LayerStore(codec=codec, level=play.level)
    if all(store.has(i) for i in images):
        if not check:
            store.ensure(images)  # marks them used (LRU)
        return store
    if check:  # read-only: a store that lacks the images cannot size a delta yet
        return None
    # hosts get their first loading steps while later layers are still being compressed
    store.fill_in_background(images)
    return store


def probe_hosts(play_plan: PlayPlan, connect: Connector, kept: Any = None) -> dict[str, Any]:
    """Probe every host of the play once (in parallel, bounded by forks) for what it can
    decode; the facts are reused by the deploy step (probed once per run), and so are the
    sessions (`kept`: engine.KeptSessions; issue 16 item 3: one connection per host)."""
    from concurrent.futures import ThreadPoolExecutor

    from distrib.engine import probe_facts

    hosts = play_plan.hosts
    with ThreadPoolExecutor(max_workers=max(1, min(play_plan.forks, len(hosts)))) as pool:
        facts = list(pool.map(lambda h: probe_facts(h, connect, kept), hosts))
    return {h.name: f for h, f in zip(hosts, facts) if f is not None}


def auto_codecs(play: Any, facts: dict[str, Any]) -> dict[str, str]:
    """`compression: auto`: each host's codec (a relay tree gets one stream: the play's)."""
    from distrib.engine import choose_codec, host_codecs

    if getattr(play, "fanout", "direct") in ("relay", "auto"):  # auto may relay: one stream
        return dict.fromkeys(facts, choose_codec(facts.values()))
    return host_codecs(facts) or {"": choose_codec(())}


def main_codec(per_host: dict[str, str]) -> str:
    """The codec most hosts use (zstd on a tie): the play's job; the others get theirs."""
    counts = [list(per_host.values()).count(c) for c in ("zstd", "gzip")]
    return "zstd" if counts[0] >= counts[1] and counts[0] else "gzip"


def codecs_line(per_host: dict[str, str]) -> str:
    """`zstd` when every host shares it, else `zstd (node1, node2), gzip (node3)`."""
    codecs = sorted(set(per_host.values()), reverse=True)
    if len(codecs) == 1:
        return codecs[0]
    return ", ".join(
        f"{c} ({', '.join(h for h, hc in per_host.items() if hc == c)})" for c in codecs
    )
