"""distrib's inventories against ansible-core ITSELF (issue 17), on the real-world-shaped corpus in
tests/data/ansible_corpus: nothing here is an expectation written by hand.

For every corpus inventory ansible-core is asked, each in one subprocess (run in parallel, once
per session):

* `ansible-inventory --list` (with `--playbook-dir`, vault password as needed): groups, their
  hosts and children, and every host's merged vars;
* tests/ansible_oracle.py: the hosts each host pattern selects (`InventoryManager.list_hosts`,
  what `ansible PATTERN --list-hosts` prints; one check runs the real `ansible` CLI too);
* `ansible all -m raw` with a fake `ssh` that records its argv and fails: where Ansible's ssh
  connection plugin would really connect (address, port, user, key file), Jinja templated and
  vault decrypted -- or that it would not use ssh at all (`ansible_connection: local`).

Then distrib's two readers are compared with those answers: the built-in one (which must give
the same answer, or refuse in one line naming `distrib[ansible]`), and the ansible-core one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distrib import ansible_core, plan
from distrib.ansible_core import VaultOptions
from distrib.errors import ConfigError
from distrib.inventory import Inventory
from distrib.inventory_records import masked, used_var
from distrib.playbook import Playbook

CORPUS = Path(__file__).parent / "data" / "ansible_corpus"
ORACLE = Path(__file__).parent / "ansible_oracle.py"
BIN = Path(sys.executable).parent
VAULT_PASS = CORPUS / "vault" / "vault-pass.txt"

needs_ansible = pytest.mark.skipif(
    not (ansible_core.available() and (BIN / "ansible-inventory").exists()),
    reason="ansible-core is not installed in this venv (pip install -e '.[ansible]')",
)


@dataclass(frozen=True)
class Case:
    name: str
    sources: tuple[str, ...]  # relative to CORPUS
    patterns: tuple[str, ...] = ()  # besides all, ungrouped and every group and host name
    playbook_dir: str | None = None
    vault: bool = False
    builtin_refuses: str | None = None  # the built-in reader must refuse, saying this

    @property
    def paths(self) -> list[str]:  # a `h1,h2,` host list is given as it is
        return [s if "," in s else str(CORPUS / s) for s in self.sources]

    @property
    def playbook_path(self) -> str | None:
        return str(CORPUS / self.playbook_dir) if self.playbook_dir else None


CASES = [
    Case(
        "docs_ini",
        ("docs_ini/hosts",),
        (
            "webservers:dbservers",
            "usa:!raleigh",
            "southeast:&raleigh",
            "www*",
            "~db-[ab]",
            "webservers[0]",
            "webservers[-1]",
            "webservers[1:3]",
            "dbservers[2:]",
            "*.example.com",
            "all:!other:!usa",
            "other,atlanta",
            "host2:host1",
            "!webservers",
            "&dbservers",
            "db-?.example.com",
            "usa[1]",
        ),
    ),  # fmt: skip
    Case(
        "docs_yaml",
        ("docs_yaml/inventory.yaml",),
        (
            "prod:test",
            "webservers:&prod",
            "dbservers:!east",
            "*.example.com",
            "~(east|west)",
            "prod[0]",
            "atlanta:webservers[-1]",
        ),
    ),  # fmt: skip
    Case(
        "examples_hosts",
        ("examples_hosts/hosts",),
        (
            "192.168.*",
            "www00[1-3].example.com",
            "webservers[2:4]",
            "~10\\.25\\.",
            "dbservers:!db-*",
            "db-1*",
            "webservers:&www*",
            "*.org:*.net",
        ),
    ),  # fmt: skip
    Case(
        "kubespray",
        ("kubespray/inventory.ini",),
        (
            "k8s_cluster:!kube_control_plane",
            "etcd:&kube_node",
            "kube_control_plane[0]",
            "node[1-3]",
            "all:!bastion",
            "k8s_cluster:etcd",
            "calico_rr",
        ),
    ),  # fmt: skip
    Case(
        "ceph",
        ("ceph/hosts",),
        ("mons:osds", "osds[1:]", "mgrs:&monitoring", "all:!mons", "osd*", "~(mon|rgw)[0-9]"),
    ),
    Case(
        "openshift",
        ("openshift/hosts",),
        (
            "OSEv3:!nodes",
            "masters:&etcd",
            "nodes:!masters",
            "nodes[-2:]",
            "*node*",
            "OSEv3:!lb:!master2.example.com",
            "lb,masters[0]",
        ),
    ),  # fmt: skip
    Case(
        "terraform",
        ("terraform/hosts.yml",),
        ("production:!worker", "app[1:]", "10.0.2.*", "~10\\.0\\.2\\.1[0-2]", "worker[0]:bastion"),
    ),
    Case("vars_precedence", ("vars_precedence/hosts.ini",), ("prod:!db", "web[1]")),
    Case(
        "later_port",
        ("later_port/hosts.ini",),
        ("web:&api",),
        builtin_refuses="Ansible uses only the first appearance's port",
    ),
    Case("ssh_aliases", ("ssh_aliases/hosts.yml",)),
    Case("group_priority", ("group_priority/hosts.yml",), ("alpha:&beta", "gamma:alpha")),
    Case(
        "playbook_vars",
        ("playbook_vars/inventory/hosts.ini",),
        ("web:db",),
        playbook_dir="playbook_vars/playbook",
    ),
    Case("multi_source", ("multi_source/a/hosts.ini", "multi_source/b/hosts.yml"), ("web:!db",)),
    Case("jinja", ("jinja/hosts.yml",), builtin_refuses="is a Jinja template"),
    Case("vault", ("vault/hosts.yml",), vault=True, builtin_refuses="a !vault value"),
    Case(
        "script",
        ("script/inventory.py",),
        ("web:!s1",),
        builtin_refuses="an executable inventory script",
    ),
    Case(
        "plugin",
        ("plugin/inventory.generator.yml",),
        ("web:&prod", "*-dev"),
        builtin_refuses="an inventory plugin configuration",
    ),
    Case("secrets_local", ("secrets_local/hosts.ini",)),
    Case("nested_depth", ("nested_depth/hosts.ini",), ("region:!rack_a", "zone[1:]", "dc*")),
    Case("dir_source", ("dir_source/inventory",), ("app:&cache", "app:!a1", "a[1:2]")),
    Case("vars_dirs", ("vars_dirs/hosts.yml",)),
    Case("ini_quirks", ("ini_quirks/hosts",), ("web[1:2]", "q[1-3]")),
    Case(
        "yaml_quirks",
        ("yaml_quirks/inventory.yml",),
        ("front:!edge", "front[-1]", "web*.example.com:&edge", "~edge-", "empty:db"),
    ),
    Case("host_list", ("h1.example.com,h2.example.com:2222,10.0.0.5,",), ("h*", "10.*")),
]
BY_NAME = {c.name: c for c in CASES}
BUILTIN_OK = [c.name for c in CASES if c.builtin_refuses is None]
REFUSED = [c.name for c in CASES if c.builtin_refuses is not None]


# --- asking ansible-core (subprocesses, all at once, once per session) -------------------------


@dataclass(frozen=True)
class Answer:
    listing: dict[str, Any]  # ansible-inventory --list
    hosts: dict[str, Any]  # pattern -> host names, or {"error": ...}
    connections: dict[str, Any]  # host -> (address, port, user, key) or "local"


# records its argv (one file per call, NUL-separated) and fails like an unreachable host
FAKE_SSH = """#!/bin/sh
printf '%s\\0' "$@" > "$(mktemp "$FAKE_SSH_LOG/XXXXXXXX")"
exit 255
"""
TAG = "DistribTag"


def _run(argv: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if done.returncode != 0 and "ansible-inventory" in argv[0]:
        raise AssertionError(f"{argv} failed: {done.stderr}")
    return done.stdout


def _vault_args(case: Case) -> list[str]:
    return ["--vault-password-file", str(VAULT_PASS)] if case.vault else []


def _ask(case: Case, work: Path) -> Answer:
    work.mkdir()
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(work / "home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
    }
    env.pop("ANSIBLE_CONFIG", None)
    sources = [a for p in case.paths for a in ("-i", p)]
    pbdir = ["--playbook-dir", case.playbook_path] if case.playbook_path else []
    listing = json.loads(
        _run([str(BIN / "ansible-inventory"), *sources, *pbdir, *_vault_args(case), "--list"], env)
    )
    names = set(listing["_meta"]["hostvars"])
    for key, group in listing.items():
        if key != "_meta":
            names.add(key)
            names.update(group.get("hosts", ()))
    patterns = ["all", "ungrouped", *sorted(names), *case.patterns]
    request = {
        "sources": case.paths,
        "vault_password_file": str(VAULT_PASS) if case.vault else None,
        "patterns": patterns,
    }
    hosts = json.loads(_run([sys.executable, str(ORACLE)], env, json.dumps(request)))["hosts"]

    log = work / "ssh-calls"
    log.mkdir()
    fake = work / "ssh"
    fake.write_text(FAKE_SSH)
    fake.chmod(0o755)
    env = {**env, "ANSIBLE_SSH_EXECUTABLE": str(fake), "FAKE_SSH_LOG": str(log)}
    # the inventory name rides along in the ssh argv (extra vars are templated per host)
    tag = json.dumps({"ansible_ssh_extra_args": f"-o {TAG}={{{{ inventory_hostname }}}}"})
    playbook = work / "play.yml"  # in a copy of the playbook dir: its group_vars/ count
    if case.playbook_path:
        shutil.copytree(case.playbook_path, work / "playbook")
        playbook = work / "playbook" / "play.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks: [{raw: 'true'}]\n")
    _run(
        [str(BIN / "ansible-playbook"), *sources, *_vault_args(case), "-f", "10",
         "-e", tag, str(playbook)],
        env,
    )  # fmt: skip
    connections: dict[str, Any] = {h: "local" for h in listing["_meta"]["hostvars"]}
    connections.update({h: "local" for h in hosts["all"]})
    for call in log.iterdir():
        argv = call.read_text().split("\0")[:-1]
        options = dict(
            argv[i + 1].split("=", 1)
            for i, a in enumerate(argv[:-2])
            if a == "-o" and "=" in argv[i + 1]
        )
        port = int(options.get("Port", 22))
        user = options.get("User", "").strip('"') or None
        key = options.get("IdentityFile", "").strip('"') or None
        connections[options[TAG]] = (argv[-2], port, user, key)
    return Answer(listing, hosts, connections)


@pytest.fixture(scope="session")
def answers(request: pytest.FixtureRequest) -> Iterator[dict[str, Answer]]:
    """ansible-core's answers for the cases the selected tests use (all, in a full run)."""
    wanted = {"docs_ini"}  # the oracle-vs-CLI check
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("name") in BY_NAME:
            wanted.add(params["name"])
    cases = [c for c in CASES if c.name in wanted]
    with tempfile.TemporaryDirectory(prefix="distrib-ansible-") as tmp:  # noqa: SIM117 (3.9)
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {c.name: pool.submit(_ask, c, Path(tmp) / c.name) for c in cases}
            yield {name: f.result() for name, f in futures.items()}


# --- distrib's side ------------------------------------------------------------------------------


def load(case: Case, reader: str) -> Inventory:
    given = case.vault and reader == "ansible"  # the built-in reader takes no vault options
    vault = VaultOptions(password_files=(str(VAULT_PASS),)) if given else None
    return Inventory.load(case.paths, case.playbook_path, vault=vault, reader=reader)


def _unwrap(value: Any) -> Any:
    """ansible-inventory's JSON markers (`__ansible_unsafe`) as the plain values they hold."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _groups(listing: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in listing.items() if k != "_meta"}


def _hostvars(listing: dict[str, Any], hosts: Any) -> dict[str, Any]:
    """Each host's vars, passwords masked as distrib shows them (never printed)."""
    hostvars = listing["_meta"]["hostvars"]
    return {h: masked(_unwrap(hostvars.get(h, {}))) for h in hosts}


def _used(key: str) -> bool:
    return used_var(key)


READERS = ["builtin", "ansible"]


def _cases_for(reader: str) -> list[str]:
    return BUILTIN_OK if reader == "builtin" else [c.name for c in CASES]


def _params() -> list[Any]:
    return [pytest.param(r, n, id=f"{r}-{n}") for r in READERS for n in _cases_for(r)]


@needs_ansible
@pytest.mark.parametrize(("reader", "name"), _params())
def test_groups_and_vars_like_ansible_inventory_list(
    answers: dict[str, Answer], reader: str, name: str
) -> None:
    case, answer = BY_NAME[name], answers[name]
    inv = load(case, reader)
    mine = inv.to_list_json()
    assert _groups(mine) == _groups(answer.listing)
    theirs = _hostvars(answer.listing, inv.hosts)
    ours = _hostvars(mine, inv.hosts)
    if reader == "builtin":
        assert ours == theirs
        return
    # the ansible-core reader templates (and decrypts) the vars distrib uses, as Ansible does
    # when it connects; those are compared with the real connections below
    for host in inv.hosts:
        assert set(ours[host]) == set(theirs[host]), host
        plain = {k: v for k, v in theirs[host].items() if not _used(k)}
        assert {k: ours[host][k] for k in plain} == plain, host


@needs_ansible
@pytest.mark.parametrize(("reader", "name"), _params())
def test_host_patterns_like_ansible_list_hosts(
    answers: dict[str, Answer], reader: str, name: str
) -> None:
    inv = load(BY_NAME[name], reader)
    for pattern, expected in answers[name].hosts.items():
        if isinstance(expected, dict) or not expected:  # Ansible: error or warning, no hosts
            with pytest.raises(ConfigError):
                inv.select(pattern)
            continue
        assert [h.name for h in inv.select(pattern)] == expected, pattern


PLAY = Playbook.from_text("- hosts: all\n  images: [demo:1]\n").plays[0]


@needs_ansible
@pytest.mark.parametrize(("reader", "name"), _params())
def test_connections_like_ansible_ssh(answers: dict[str, Answer], reader: str, name: str) -> None:
    """Where distrib connects == where Ansible's ssh plugin connects, for every host."""
    inv = load(BY_NAME[name], reader)
    for host in inv.hosts.values():
        expected = answers[name].connections[host.name]
        if expected == "local":
            assert host.connection == "local", host.name
            continue
        target = plan.host_plan(host, PLAY).target
        key = os.path.expanduser(target.key_file) if target.key_file else None
        assert (target.address, target.port, target.user, key) == tuple(expected), host.name


@pytest.mark.parametrize("name", REFUSED)
def test_builtin_reader_refuses_in_one_line_naming_the_extra(name: str) -> None:
    case = BY_NAME[name]
    with pytest.raises(ConfigError) as info:
        load(case, "builtin")
    text = str(info.value)
    assert case.builtin_refuses is not None and case.builtin_refuses in text
    assert "\n" not in text
    assert "distrib[ansible]" in text or "Ansible uses only" in text
    assert "vault_user" not in text and "sudo-secret" not in text  # no secret shown


@needs_ansible
def test_the_oracle_agrees_with_the_ansible_cli(answers: dict[str, Answer]) -> None:
    """tests/ansible_oracle.py stands for `ansible PATTERN --list-hosts`: checked on two."""
    case = BY_NAME["docs_ini"]
    for pattern in ("usa:!raleigh", "webservers[1:3]"):
        out = subprocess.run(
            [str(BIN / "ansible"), "-i", case.paths[0], pattern, "--list-hosts"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        listed = [line.strip() for line in out.splitlines()[1:]]
        assert listed == answers["docs_ini"].hosts[pattern]


def test_secrets_and_local_connection_are_on_the_host_record() -> None:
    """The vars the CLI side needs (item 7) survive both readers, with Ansible's alias order."""
    for reader in READERS if ansible_core.available() else ["builtin"]:
        inv = load(BY_NAME["secrets_local"], reader)
        p1, p2 = inv.hosts["p1"], inv.hosts["p2"]
        assert inv.hosts["localhost"].connection == "local"
        assert (p1.password, p1.become_password) == ("plainpw", "becomepw")
        assert (p2.password, p2.become_password) == ("newpw", "bp2")  # ansible_ssh_password wins
        for host, password, become in ((p1, "plainpw", "becomepw"), (p2, "newpw", "bp2")):
            play = Playbook.from_text("- hosts: all\n  images: [demo:1]\n  become: true\n")
            planned = plan.host_plan(host, play.plays[0])
            assert planned.target.password is not None and planned.become is not None
            assert planned.target.password.reveal() == password
            assert planned.become.password is not None
            assert planned.become.password.reveal() == become


@needs_ansible
def test_vault_values_are_decrypted_for_connecting_not_shown() -> None:
    inv = load(BY_NAME["vault"], "ansible")
    v1, v2 = inv.hosts["v1"], inv.hosts["v2"]
    t1, t2 = (plan.host_plan(h, PLAY).target for h in (v1, v2))
    assert (t1.user, t1.port, t2.port) == ("vault_user", 2205, 2205)
    assert v2.become_password == "sudo-secret"
    shown = json.dumps(inv.to_list_json()) + inv.graph(show_vars=True)
    assert "sudo-secret" not in shown and "********" in shown  # never printed
    with pytest.raises(ConfigError, match="vault"):
        Inventory.load(BY_NAME["vault"].paths, reader="ansible")  # no secret given


@needs_ansible
def test_reader_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from distrib.inventory import choose_reader

    monkeypatch.setenv("DISTRIB_INVENTORY_PARSER", "builtin")
    assert choose_reader() == "builtin"
    monkeypatch.setenv("DISTRIB_INVENTORY_PARSER", "auto")
    assert choose_reader() == "ansible"
    monkeypatch.setenv("DISTRIB_INVENTORY_PARSER", "ansible")
    assert choose_reader() == "ansible"
    monkeypatch.setenv("DISTRIB_INVENTORY_PARSER", "bogus")
    with pytest.raises(ConfigError, match="must be auto, builtin or ansible"):
        choose_reader()
    monkeypatch.setattr(ansible_core, "available", lambda: False)
    monkeypatch.setenv("DISTRIB_INVENTORY_PARSER", "ansible")
    with pytest.raises(ConfigError, match=r"distrib\[ansible\]"):
        choose_reader()
    monkeypatch.setenv("DISTRIB_INVENTORY_PARSER", "auto")
    assert choose_reader() == "builtin"
    with pytest.raises(ConfigError, match=r"vault options need ansible-core"):
        Inventory.load(BY_NAME["docs_ini"].paths, vault=VaultOptions(ask_vault_pass=True))


@needs_ansible
def test_corpus_needs_no_network() -> None:
    assert shutil.which("ansible-inventory", path=str(BIN))


@needs_ansible
def test_ansible_reader_refuses_a_source_it_cannot_read(tmp_path: Path) -> None:
    """Ansible warns and goes on with fewer hosts; distrib stops, naming the source."""
    good = BY_NAME["docs_ini"].paths[0]
    with pytest.raises(ConfigError, match="inventory source not found"):
        Inventory.load([good, str(tmp_path / "nope.yml")], reader="ansible")
    (tmp_path / "broken.ini").write_text("[g\nbroken\n")
    with pytest.raises(ConfigError, match="failed to parse inventory source"):
        Inventory.load([good, str(tmp_path / "broken.ini")], reader="ansible")


@needs_ansible
def test_vault_id_with_a_label() -> None:
    vault = VaultOptions(vault_ids=(f"dev@{VAULT_PASS}",))
    inv = Inventory.load(BY_NAME["vault"].paths, vault=vault, reader="ansible")
    assert plan.host_plan(inv.hosts["v1"], PLAY).target.user == "vault_user"


@needs_ansible
def test_extra_vars_take_part_in_templating_not_in_host_vars() -> None:
    """`ansible_user: "{{ deploy_user }}"` with -e deploy_user=ops: ops, as in Ansible."""
    paths = BY_NAME["jinja"].paths
    inv = Inventory.load(paths, reader="ansible", extra_vars={"deploy_user": "ops"})
    users = [plan.host_plan(inv.hosts[h], PLAY).target.user for h in ("web1", "db1")]
    assert users == ["ops", "ops_db"]
    assert inv.hosts["web1"].vars["deploy_user"] == "deployer"  # the inventory's own value
