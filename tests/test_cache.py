from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from distrib import cache, units
from distrib.errors import ConfigError
from tests.conftest import distrib


@pytest.mark.parametrize(
    ("text", "size"),
    [("1000", 1000), ("500M", 500_000_000), ("20G", 20_000_000_000), ("1.5t", 1_500_000_000_000), ("2KB", 2000)],
)
def test_parse_size(text: str, size: int) -> None:
    assert units.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "5X"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ConfigError, match="not a size"):
        units.parse_size(text)


def _archive(root: Path, key: str, size: int, age: float) -> None:
    d = root / "archives"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{key}.tar.gz").write_bytes(b"x" * size)
    (d / f"{key}.json").write_text('{"codec": "gzip", "images": {"a:1": "sha256:1"}}')
    t = time.time() - age
    os.utime(d / f"{key}.tar.gz", (t, t))


def test_prune_least_recently_used_first(tmp_path: Path) -> None:
    _archive(tmp_path, "old", 1000, 300)
    _archive(tmp_path, "mid", 1000, 200)
    _archive(tmp_path, "new", 1000, 100)
    assert [e.path.rsplit("/", 1)[1] for e in cache.entries(str(tmp_path))] == ["old.tar.gz", "mid.tar.gz", "new.tar.gz"]
    assert cache.prune(2000, str(tmp_path)) == (1, 1000)
    left = sorted(os.listdir(tmp_path / "archives"))
    assert left == ["mid.json", "mid.tar.gz", "new.json", "new.tar.gz"]


def test_cache_cli(tmp_path: Path) -> None:
    _archive(tmp_path, "one", 5000, 10)
    env = {**os.environ, "DISTRIB_CACHE_DIR": str(tmp_path)}
    listed = distrib("cache", "list", env=env)
    assert listed.returncode == 0 and "gzip a:1" in listed.stdout and "1 entries" in listed.stdout
    pruned = distrib("cache", "prune", "--all", env=env)
    assert pruned.returncode == 0 and "removed 1 entries" in pruned.stdout
    assert distrib("cache", "prune", "--max-size", "lots", env=env).returncode == 5
