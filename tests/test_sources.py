"""images_from: (issue 18, item 2): compose files, Kubernetes YAML and list files, from
realistic files; errors name the file, line and key. Pure: no hosts, no docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrib import sources
from distrib.errors import ConfigError
from distrib.playbook import Playbook, adhoc_play

COMPOSE = """\
name: shop
services:
  web:
    image: registry.example.com:5000/shop/web:2.3.1
    ports: ["8080:80"]
    depends_on: [api, db]
  api:
    image: shop/api:2.3.1
    environment:
      DATABASE_URL: postgres://db/shop
  worker:
    build: ./worker          # built here: no image name to ship
  db:
    image: postgres:16-alpine
  cache:
    image: redis
volumes:
  pgdata: {}
"""

KUBERNETES = """\
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 3
  template:
    spec:
      initContainers:
        - name: migrate
          image: shop/migrate:2.3.1
      containers:
        - name: api
          image: shop/api:2.3.1
        - name: sidecar
          image: envoyproxy/envoy:v1.29.1
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  template:
    spec:
      containers:
        - {name: db, image: "postgres:16-alpine"}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: logs}
spec:
  template:
    spec:
      containers: [{name: fluent, image: "fluent/fluent-bit:3.0"}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: report, image: shop/report:1.0}]
          restartPolicy: OnFailure
---
apiVersion: batch/v1
kind: Job
metadata: {name: seed}
spec:
  template:
    spec:
      containers: [{name: seed, image: "shop/api:2.3.1"}]
---
apiVersion: v1
kind: Pod
metadata: {name: debug}
spec:
  containers:
    - name: shell
      image: busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: listed}
    spec:
      containers: [{name: x, image: "shop/listed:1"}]
"""

LISTFILE = """\
# images for the offline site, release 2.3
shop/web:2.3.1
shop/api:2.3.1   # the API

  postgres:16-alpine
"""


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "compose.yaml",
            COMPOSE,
            [
                ("registry.example.com:5000/shop/web:2.3.1", 4, "services.web.image"),
                ("shop/api:2.3.1", 8, "services.api.image"),
                ("postgres:16-alpine", 14, "services.db.image"),
                ("redis", 16, "services.cache.image"),
            ],
        ),
        (
            "app.yml",
            KUBERNETES,
            [
                (
                    "shop/migrate:2.3.1",
                    18,
                    "Deployment/api: spec.template.spec.initContainers[0].image",
                ),
                ("shop/api:2.3.1", 21, "Deployment/api: spec.template.spec.containers[0].image"),
                (
                    "envoyproxy/envoy:v1.29.1",
                    23,
                    "Deployment/api: spec.template.spec.containers[1].image",
                ),
                (
                    "postgres:16-alpine",
                    32,
                    "StatefulSet/db: spec.template.spec.containers[0].image",
                ),
                (
                    "fluent/fluent-bit:3.0",
                    40,
                    "DaemonSet/logs: spec.template.spec.containers[0].image",
                ),
                (
                    "shop/report:1.0",
                    51,
                    "CronJob/nightly: spec.jobTemplate.spec.template.spec.containers[0].image",
                ),
                (
                    "busybox@sha256:" + "0" * 64,
                    68,
                    "Pod/debug: spec.containers[0].image",
                ),
                ("shop/listed:1", 77, "Pod/listed: spec.containers[0].image"),
            ],
        ),
        (
            "images.txt",
            LISTFILE,
            [
                ("shop/web:2.3.1", 2, "line 2"),
                ("shop/api:2.3.1", 3, "line 3"),
                ("postgres:16-alpine", 5, "line 5"),
            ],
        ),
    ],
)
def test_images_in_realistic_files(tmp_path: Path, name: str, text: str, expected: list) -> None:
    path = tmp_path / name
    path.write_text(text)
    found = sources.images_in(str(path))
    assert [(f.text, f.line, f.key) for f in found] == expected
    assert {f.file for f in found} == {str(path)}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "c.yaml",
            "services:\n  web:\n    image: 42\n",
            "c.yaml:3: services.web.image: must be an image",
        ),
        (
            "c.yaml",
            "services:\n  web:\n    image: app:${TAG}\n",
            "c.yaml:3: services.web.image: 'app:${TAG}' uses variable",
        ),
        ("c.yaml", "services: [web]\n", "c.yaml:1: services: must be a mapping"),
        (
            "c.yaml",
            "services:\n  web: nginx\n",
            "c.yaml:2: services.web: a service must be a mapping",
        ),
        ("c.yaml", "services:\n  web: {build: .}\n", "c.yaml:1: names no image"),
        (
            "k.yaml",
            "kind: Deployment\nmetadata: {name: a}\nspec:\n  replicas: 1\n",
            "k.yaml:4: spec.template: Deployment/a has no pod spec",
        ),
        (
            "k.yaml",
            "kind: Pod\nspec:\n  containers:\n    - name: x\n",
            "k.yaml:4: Pod/?: spec.containers[0].image: a container must have an image",
        ),
        (
            "k.yaml",
            "kind: Pod\nspec:\n  containers: {name: x}\n",
            "k.yaml:3: Pod/?: spec.containers: must be a list",
        ),
        ("k.yaml", "kind: Service\n---\n- a\n", "k.yaml:3: neither a compose file"),
        ("k.yaml", "kind: Pod\nspec: [\n", "k.yaml:3: invalid YAML"),
        ("i.txt", "shop/web:1\nshop/api:1 shop/db:1\n", "i.txt:2: one image reference per line"),
        ("i.txt", "# nothing yet\n", "i.txt:1: names no image"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        sources.images_in(str(path))
    assert str(err.value).startswith(
        str(tmp_path / message.split(":", 1)[0]) + ":" + message.split(":", 1)[1]
    )


def test_playbook_merges_images_and_images_from_once(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "compose.yaml").write_text(COMPOSE)
    (tmp_path / "extra.txt").write_text("shop/tools:1\nshop/api:2.3.1\n")
    book = tmp_path / "site.yaml"
    book.write_text(
        "- hosts: all\n  images: [shop/api:2.3.1]\n"
        "  images_from: [deploy/compose.yaml, extra.txt]\n"
    )
    play = Playbook.load(str(book)).plays[0]
    assert [str(i) for i in play.images] == [
        "shop/api:2.3.1",
        "registry.example.com:5000/shop/web:2.3.1",
        "postgres:16-alpine",
        "redis:latest",
        "shop/tools:1",
    ]
    assert play.images[0].where.file == str(book)  # listed in images: first
    assert play.images[1].where == type(play.images[1].where)(
        str(tmp_path / "deploy" / "compose.yaml"), 4
    )


def test_playbook_images_from_errors(tmp_path: Path) -> None:
    book = tmp_path / "site.yaml"
    book.write_text("- hosts: all\n  images_from: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: cannot read images_from"):
        Playbook.load(str(book))
    (tmp_path / "bad.txt").write_text("Shop/Web:1\n")
    book.write_text("- hosts: all\n  images_from: [bad.txt]\n")
    with pytest.raises(ConfigError, match=r"bad.txt:1: line 1: invalid image reference"):
        Playbook.load(str(book))
    book.write_text("- hosts: all\n  images_from: []\n")
    with pytest.raises(ConfigError, match=r"site.yaml:2: images_from: must be a file"):
        Playbook.load(str(book))


def test_push_flag_images_from(tmp_path: Path) -> None:
    listed = tmp_path / "images.txt"
    listed.write_text(LISTFILE)
    play = adhoc_play("all", [], images_from=[str(listed)])
    assert [str(i) for i in play.images] == [
        "shop/web:2.3.1",
        "shop/api:2.3.1",
        "postgres:16-alpine",
    ]


PULL_BOOK = """\
- hosts: web
  images: [shop/web:2.3.1, shop/api:2.3.1]
  local_pull: missing
  platform: linux/arm64
- hosts: db
  images: [postgres:16-alpine, shop/api:2.3.1]
  local_pull: always
- hosts: tools
  images: [shop/tools:1]
"""


@pytest.mark.parametrize(
    ("missing", "check", "expected"),
    [
        (
            {"shop/api:2.3.1", "shop/tools:1"},
            False,
            [("shop/api:2.3.1", "linux/arm64", 2), ("postgres:16-alpine", None, 6),
             ("shop/api:2.3.1", None, 6)],
        ),
        (set(), False, [("postgres:16-alpine", None, 6), ("shop/api:2.3.1", None, 6)]),
        (set(), True, []),  # a dry run refreshes nothing
        ({"postgres:16-alpine"}, True, [("postgres:16-alpine", None, 6)]),
    ],
)  # fmt: skip
def test_local_pulls(missing: set[str], check: bool, expected: list) -> None:
    from distrib.playbook import local_pulls
    from distrib.refs import ImageRef

    book = Playbook.from_text(PULL_BOOK, "site.yaml")
    pulls = local_pulls(book.plays, {ImageRef.parse(m) for m in missing}, check)
    assert [(str(s.ref), p, s.where.line) for s, p in pulls] == expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("local_pull: sometimes", "site.yaml:3: local_pull: must be one of missing, always, never"),
        ("local_pull: true", "site.yaml:3: local_pull: must be one of"),
        ("platform: amd64", "site.yaml:3: platform: must be OS/ARCH"),
    ],
)
def test_pull_keys_are_checked(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Playbook.from_text(f"- hosts: all\n  images: [a:1]\n  {extra}\n", "site.yaml")
