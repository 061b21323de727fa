"""Inventory parsing against Ansible's YAML and INI inventory plugins and InventoryData rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from distrib import plan
from distrib.errors import ConfigError
from distrib.hostrange import expand_host_range
from distrib.inventory import Host, Inventory
from distrib.playbook import Playbook
from distrib.target import Target

DATA = Path(__file__).parent / "data" / "inventory"

WEB = [f"web0{i}.example.com" for i in range(1, 5)]
DB = [f"db-{c}.example.com" for c in "abc"]


PLAY = Playbook.from_text("- hosts: all\n  images: [demo:1]\n").plays[0]


def target(host: Host) -> Target:
    """Where distrib connects to `host`: the planner reads the inventory's connection vars."""
    return plan.host_plan(host, PLAY).target


def load(*names: str) -> Inventory:
    return Inventory.load([str(DATA / n) if not n.endswith(",") else n for n in names])


def yaml(text: str) -> Inventory:
    return Inventory.from_yaml_text(text, "inv.yml")


def ini(text: str) -> Inventory:
    return Inventory.from_ini_text(text, "hosts.ini")


def error(fn: Any, *args: Any) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return str(info.value)


# --- the same inventory in both formats --------------------------------------------------------


@pytest.fixture(scope="module", params=["site.yml", "site.ini"])
def site(request: pytest.FixtureRequest) -> Inventory:
    return load(request.param)


def test_yaml_and_ini_give_the_same_inventory() -> None:
    y, i = load("site.yml"), load("site.ini")
    assert list(y.hosts) == list(i.hosts)
    for name in y.hosts:
        assert y.hosts[name].vars == i.hosts[name].vars, name
        assert y.hosts[name].groups == i.hosts[name].groups, name
    assert set(y.groups) == set(i.groups)
    for name in y.groups:
        assert y.groups[name].children == i.groups[name].children, name
        assert y.groups[name].vars == i.groups[name].vars, name
        assert y.group_hosts(name) == i.group_hosts(name), name
    assert y.to_list_json() == i.to_list_json()
    assert y.graph() == i.graph()


def test_site_hosts(site: Inventory) -> None:
    assert list(site.hosts) == ["bastion.example.com", *WEB, *DB, "edge1"]
    assert list(site.groups)[:2] == ["all", "ungrouped"]
    assert site.groups["all"].children == ("ungrouped", "prod", "edge")
    assert site.groups["prod"].children == ("web", "db")
    assert site.groups["web"].hosts == tuple(WEB)
    assert site.groups["ungrouped"].hosts == ("bastion.example.com",)
    assert site.group_hosts("prod") == tuple(WEB + DB)


def test_site_vars_and_precedence(site: Inventory) -> None:
    web = site.hosts["web02.example.com"]
    assert web.groups == ("all", "prod", "web")
    assert web.vars == {
        "docker_command": "sudo docker",  # prod (depth 1) beats all (depth 0)
        "ansible_user": "deploy",
        "env": "prod",
        "http_port": 8080,
        "remote_tmp": "/var/tmp/distrib",
    }
    db = site.hosts["db-b.example.com"]
    assert db.vars["ansible_become"] is True
    assert db.vars["ansible_become_user"] == "root"
    assert target(db).port == 2222
    edge = site.hosts["edge1"]
    assert edge.vars["docker_command"] == "docker"
    assert edge.vars["ansible_ssh_common_args"] == "-o ProxyJump=bastion.example.com"
    assert edge.vars["known_hosts"] == "/etc/distrib/known_hosts"


def test_site_connection_settings(site: Inventory) -> None:
    edge = target(site.hosts["edge1"])
    assert (edge.address, edge.port, edge.user) == ("10.0.0.5", 22, "deploy")
    assert edge.key_file is not None
    assert os.path.expanduser(edge.key_file) == os.path.expanduser("~/.ssh/edge")
    bastion = target(site.hosts["bastion.example.com"])
    assert (bastion.address, bastion.port, bastion.key_file) == ("203.0.113.10", 22, None)
    assert target(site.hosts["web01.example.com"]).address == "web01.example.com"


def test_host_source_names_file_and_line() -> None:
    y = load("site.yml")
    assert y.hosts["web03.example.com"].source.endswith("site.yml:14")
    assert y.hosts["edge1"].source.endswith("site.yml:30")
    assert y.groups["db"].source.endswith("site.yml:18")
    i = load("site.ini")
    assert i.hosts["edge1"].source.endswith("site.ini:27")
    assert i.groups["all"].source == "<implicit>"


def test_to_list_json_like_ansible_inventory_list(site: Inventory) -> None:
    data = site.to_list_json()
    assert data["all"] == {"children": ["ungrouped", "prod", "edge"]}
    assert data["ungrouped"] == {"hosts": ["bastion.example.com"]}
    assert data["prod"] == {"children": ["web", "db"]}
    assert data["web"] == {"hosts": WEB}
    assert data["_meta"]["hostvars"]["db-a.example.com"]["ansible_port"] == 2222
    assert set(data["_meta"]["hostvars"]) == set(site.hosts)


def test_to_list_json_leaves_out_empty_groups_and_vars() -> None:
    inv = ini("h1\n[empty]\n")
    assert inv.to_list_json() == {
        "all": {"children": ["ungrouped", "empty"]},
        "ungrouped": {"hosts": ["h1"]},
        "_meta": {"hostvars": {}},
    }


def test_graph_like_ansible_inventory_graph(site: Inventory) -> None:
    assert site.graph() == "\n".join(
        [
            "@all:",
            "  |--@ungrouped:",
            "  |  |--bastion.example.com",
            "  |--@prod:",
            "  |  |--@web:",
            *[f"  |  |  |--{h}" for h in WEB],
            "  |  |--@db:",
            *[f"  |  |  |--{h}" for h in DB],
            "  |--@edge:",
            "  |  |--edge1",
        ]
    )
    assert site.graph("db").splitlines() == ["@db:", *[f"  |--{h}" for h in DB]]


def test_graph_with_vars() -> None:
    inv = yaml("all:\n  children:\n    g:\n      hosts: {h: {b: 2}}\n      vars: {a: 1}\n")
    assert inv.graph("g", show_vars=True).splitlines() == [
        "@g:",
        "  |--h",
        "  |  |--{a = 1}",
        "  |  |--{b = 2}",
        "  |--{a = 1}",
    ]
    assert "no group 'nope'" in error(inv.graph, "nope")


# --- YAML specifics ----------------------------------------------------------------------------


def test_yaml_null_hosts_string_hosts_and_implicit_children() -> None:
    inv = yaml(
        """
all:
  hosts:
    node1:
  children:
    solo:
      hosts: node2
    parent:
      children:
        newgroup:
"""
    )
    assert list(inv.hosts) == ["node1", "node2"]
    assert "newgroup" in inv.groups
    assert inv.groups["parent"].children == ("newgroup",)
    assert inv.hosts["node1"].groups == ("all", "ungrouped")
    assert inv.groups["all"].hosts == ("node1",)  # Ansible keeps it in all and adds ungrouped


def test_yaml_top_level_group_other_than_all() -> None:
    inv = yaml("web:\n  hosts:\n    w1:\n  vars:\n    x: 1\n")
    assert inv.groups["all"].children == ("ungrouped", "web")
    assert inv.hosts["w1"].groups == ("all", "web")
    assert inv.hosts["w1"].vars == {"x": 1}


def test_yaml_host_port_shorthand_and_ipv6() -> None:
    inv = yaml("all:\n  hosts:\n    'web1:2222':\n    '[2001:db8::1]:2200':\n    fe80::1:\n")
    assert target(inv.hosts["web1"]).port == 2222
    assert target(inv.hosts["2001:db8::1"]).port == 2200
    assert target(inv.hosts["fe80::1"]).port == 22


def test_ansible_host_aliases_and_string_port() -> None:
    inv = yaml(
        "all:\n  hosts:\n    a: {ansible_ssh_host: 10.1.1.1, ansible_ssh_port: '2022',"
        " ansible_ssh_user: u, ansible_private_key_file: /k}\n"
    )
    a = target(inv.hosts["a"])
    assert (a.address, a.port, a.user, a.key_file) == ("10.1.1.1", 2022, "u", "/k")


# --- precedence --------------------------------------------------------------------------------


def test_precedence_all_parent_child_host() -> None:
    inv = yaml(
        """
all:
  vars: {v: all, a: all, p: all, c: all}
  children:
    parent:
      vars: {v: parent, p: parent, c: parent}
      children:
        child:
          vars: {v: child, c: child}
          hosts:
            h: {v: host}
"""
    )
    assert inv.hosts["h"].vars == {"v": "host", "a": "all", "p": "parent", "c": "child"}
    assert inv.groups["child"].depth == 2


def test_precedence_same_depth_by_name_then_priority() -> None:
    text = """
all:
  children:
    beta:
      hosts: {h: }
      vars: {v: beta}
    alpha:
      hosts: {h: }
      vars: {v: alpha}
"""
    assert yaml(text).hosts["h"].vars == {"v": "beta"}  # sorted by name: alpha, then beta wins
    assert yaml(text).hosts["h"].groups == ("all", "alpha", "beta")
    raised = text.replace("vars: {v: alpha}", "vars: {v: alpha, ansible_group_priority: 10}")
    inv = yaml(raised)
    assert inv.hosts["h"].vars == {"v": "alpha"}  # higher priority applies later
    assert inv.groups["alpha"].priority == 10
    assert "ansible_group_priority" not in inv.groups["alpha"].vars  # Ansible keeps it apart
    assert "{ansible_group_priority = 10}" in inv.graph(show_vars=True)


def test_precedence_depth_beats_priority() -> None:
    inv = yaml(
        """
all:
  children:
    top:
      vars: {v: top, ansible_group_priority: 99}
      hosts: {h: }
      children:
        deep:
          vars: {v: deep}
          hosts: {h: }
"""
    )
    assert inv.hosts["h"].vars == {"v": "deep"}


def test_depth_is_longest_path_from_all() -> None:
    inv = ini(
        "[a:children]\nb\n[b:children]\nc\n[c]\nh\n[x:children]\nc\n[x:vars]\nv=x\n[a:vars]\nv=a\n"
    )
    assert [inv.groups[g].depth for g in ("a", "b", "c", "x")] == [1, 2, 3, 1]
    assert inv.hosts["h"].groups == ("all", "a", "x", "b", "c")
    assert inv.hosts["h"].vars == {"v": "x"}


def test_values_replace_not_merge() -> None:
    inv = yaml(
        "all:\n  vars: {d: {a: 1, b: 2}}\n  children:\n    g:\n      hosts: {h: }\n"
        "      vars: {d: {a: 9}}\n"
    )
    assert inv.hosts["h"].vars["d"] == {"a": 9}  # hash_behaviour=replace


# --- ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("host", ["host"]),
        ("web[1:3]", ["web1", "web2", "web3"]),
        ("web[01:03].example", ["web01.example", "web02.example", "web03.example"]),
        ("web[08:11]", ["web08", "web09", "web10", "web11"]),
        ("n[1:10:3]", ["n1", "n4", "n7", "n10"]),
        ("n[01:10:2]", ["n01", "n03", "n05", "n07", "n09"]),
        ("n[:2]", ["n0", "n1", "n2"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("[a:e:2]x", ["ax", "cx", "ex"]),
        ("[y:B]", ["y", "z", "A", "B"]),  # string.ascii_letters order, as Ansible
        ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
        ("10.0.0.[1:3]", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        ("n[5:5]", ["n5"]),
    ],
)
def test_expand_host_range(pattern: str, expected: list[str]) -> None:
    assert expand_host_range(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("web[01:]", "must have an end value"),
        ("web[a:1]", "both numbers or both single letters"),
        ("web[1:5:0]", "step must be a positive number"),
        ("web[1:5:x]", "step 'x' is not a number"),
        ("web[5:1]", "start 5 is after the end 1"),
        ("web[c:a]", "start 'c' is after the end 'a'"),
        ("web[01:100]", "same width"),
        ("web[1]", "[begin:end] or [begin:end:step]"),
        ("web[1:2:3:4]", "[begin:end] or [begin:end:step]"),
        ("web[1:2", "missing ']'"),
        ("web[aa:bb]", "both numbers or both single letters"),
    ],
)
def test_malformed_ranges(pattern: str, message: str) -> None:
    text = error(expand_host_range, pattern)
    assert message in text
    assert repr(pattern) in text


@pytest.mark.parametrize("bad", ["web[01:]", "web[a:1]", "web[1:5:0]", "web[5:1]"])
def test_malformed_range_in_files_names_file_and_line(bad: str) -> None:
    assert error(yaml, f"all:\n  hosts:\n    ok:\n    {bad}:\n").startswith("inv.yml:4: ")
    assert error(ini, f"ok\n[g]\n{bad} x=1\n").startswith("hosts.ini:3: ")


# --- INI specifics -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("v=1", 1),
        ("v=-3", -3),
        ("v=1.5", 1.5),
        ("v=True", True),
        ("v=None", None),
        ("v=yes", "yes"),  # not a Python literal: stays a string
        ("v=FALSE", "FALSE"),
        ("v=[1,2]", [1, 2]),
        ("v={'a':1}", "{a:1}"),  # shlex ate the quotes: no longer a literal
        ("v=\"{'a': 1}\"", {"a": 1}),
        ("v=/usr/bin/docker", "/usr/bin/docker"),
        ('v="hello world"', "hello world"),  # shlex removes the quotes
        ("v='5'", 5),  # ... so this becomes 5, as in Ansible
        ("v=\"'5'\"", "5"),  # Ansible's documented way to keep a string
        ("v='03#pa33w0rd'", "03#pa33w0rd"),
        ("v=a=b", "a=b"),
        ("v=", ""),
    ],
)
def test_ini_host_var_values(assignment: str, expected: Any) -> None:
    inv = ini(f"h {assignment} # trailing comment\n")
    assert inv.hosts["h"].vars == {"v": expected}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("v=8080", 8080),
        ("v = 8080 # comment", 8080),
        ("v = True", True),
        ("v = sudo docker", "sudo docker"),
        ("v = 'quoted'", "quoted"),
        ('v = "x y"', "x y"),
        ("v=a=b", "a=b"),
    ],
)
def test_ini_group_var_values(line: str, expected: Any) -> None:
    inv = ini(f"[g]\nh\n[g:vars]\n{line}\n")
    assert inv.groups["g"].vars == {"v": expected}


def test_ini_structure() -> None:
    inv = ini(
        """
; comment
top1
top2 ansible_port=2200

[web]
w1:2222
top2
[2001:db8::1]:2201

[web:children]
child

[child]
c1

[ungrouped:vars]
u=1
"""
    )
    assert list(inv.hosts) == ["top1", "top2", "w1", "2001:db8::1", "c1"]
    assert inv.groups["ungrouped"].hosts == ("top1",)  # top2 is also in web: moved out
    assert inv.hosts["top2"].groups == ("all", "web")
    assert target(inv.hosts["w1"]).port == 2222
    assert target(inv.hosts["2001:db8::1"]).port == 2201
    assert target(inv.hosts["top2"]).port == 2200
    assert inv.group_hosts("web") == ("w1", "top2", "2001:db8::1", "c1")
    assert inv.hosts["top1"].vars == {"u": 1}


def test_ini_children_may_be_declared_later() -> None:
    inv = ini("[parent:children]\nkid\n[kid]\nk1\n[kid:vars]\nx=1\n")
    assert inv.groups["parent"].children == ("kid",)
    assert inv.hosts["k1"].groups == ("all", "parent", "kid")


def test_ini_vars_section_before_group_section() -> None:
    inv = ini("[g:vars]\nx=1\n[g]\nh\n")
    assert inv.hosts["h"].vars == {"x": 1}


# --- several sources ---------------------------------------------------------------------------


def test_sources_merge() -> None:
    inv = load("merge_a.yml", "merge_b.ini")
    assert list(inv.hosts) == ["web1", "web2", "web3", "db1"]
    assert inv.groups["web"].hosts == ("web1", "web2", "web3")
    assert inv.groups["web"].vars == {"color": "green", "tier": "frontend"}  # later wins
    assert inv.hosts["web1"].groups == ("all", "db", "web")
    assert target(inv.hosts["web1"]).port == 2201  # same value twice is fine
    assert inv.hosts["web1"].source.endswith("merge_a.yml:5")
    assert inv.sources == (str(DATA / "merge_a.yml"), str(DATA / "merge_b.ini"))


def test_directory_source() -> None:
    inv = load("dir")
    # sorted, recursive; README.md, .hidden.yml, group_vars/ and *.retry are skipped
    assert list(inv.hosts) == ["w1", "w2", "d1", "e1"]
    assert inv.groups["web"].hosts == ("w1", "w2")
    assert "hidden" not in inv.hosts
    assert inv.groups["all"].children == ("ungrouped", "web", "db", "edge")


def test_group_vars_and_host_vars_beside_the_source() -> None:
    inv = load("dir")
    w1, w2, d1 = (inv.hosts[h] for h in ("w1", "w2", "d1"))
    assert w1.vars == {
        "ansible_user": "fromfile",  # group_vars/all.yml beats the inline all vars
        "docker_command": "docker",
        "tier": "web",  # group_vars/web/ is a directory of files
        "http_port": 8080,
        "ansible_port": 2201,  # host_vars/w1 (no extension) beats the inline host var
    }
    assert w2.vars == {k: v for k, v in w1.vars.items() if k != "ansible_port"}
    assert d1.vars == {"ansible_user": "fromfile", "docker_command": "docker"}
    assert inv.groups["all"].vars["ansible_user"] == "fromfile"
    assert "nosuchhost" not in inv.hosts  # host_vars for unknown hosts are ignored


def test_group_vars_beside_a_file_source(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text("[g]\nh a=1\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "g.yml").write_text("b: 2\n")
    (tmp_path / "group_vars" / "bad.yml").write_text("- not a mapping\n")
    assert Inventory.load([str(tmp_path / "hosts.ini")]).hosts["h"].vars == {"b": 2, "a": 1}
    (tmp_path / "group_vars" / "g.yml").write_text("- not a mapping\n")
    text_of_error = error(Inventory.load, [str(tmp_path / "hosts.ini")])
    assert text_of_error.startswith(f"{tmp_path / 'group_vars' / 'g.yml'}:1: group_vars file")


def test_host_list_source() -> None:
    inv = load("h1,h2:2222, 192.0.2.7 ,h1,")
    assert list(inv.hosts) == ["h1", "h2", "192.0.2.7"]
    assert inv.groups["ungrouped"].hosts == ("h1", "h2", "192.0.2.7")
    assert target(inv.hosts["h2"]).port == 2222
    assert target(Inventory.load(["solo,"]).hosts["solo"]).port == 22


def test_host_list_does_not_expand_ranges() -> None:
    assert list(Inventory.load(["web[1:2],"]).hosts) == ["web[1:2]"]


def test_extensionless_files_are_detected_by_content() -> None:
    inv = load("hosts_noext", "ini_noext")
    assert list(inv.hosts) == ["yamlhost", "inihost", "inihost2"]
    assert target(inv.hosts["inihost"]).port == 2200


def test_string_source_and_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "inv.ini").write_text("h1\n")
    assert list(Inventory.load("~/inv.ini").hosts) == ["h1"]  # type: ignore[arg-type]


# --- errors: every one names file and line -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("all:\n  hosts:\n    h:\n  childen:\n    g:\n", "inv.yml:4", "unexpected key 'childen'"),
        ("all:\n  children:\n    g:\n      host: {h: }\n", "inv.yml:4", "unexpected key 'host'"),
        ("all:\n  vars: [a, b]\n", "inv.yml:2", "'vars' of group 'all' must be a mapping"),
        ("all:\n  vars: x=1\n", "inv.yml:2", "'vars' of group 'all' must be a mapping"),
        ("all:\n  hosts:\n    - a\n    - b\n", "inv.yml:2", "'hosts' of group 'all' must be a map"),
        ("all:\n  children: [g]\n", "inv.yml:2", "'children' of group 'all' must be a mapping"),
        ("all:\n  hosts:\n    h: [1]\n", "inv.yml:3", "host 'h' in group 'all' must map to"),
        ("all:\n  hosts:\n    h: x\n", "inv.yml:3", "host 'h' in group 'all' must map to"),
        ("all:\n  children:\n    g: [h]\n", "inv.yml:3", "group 'g' must be a mapping"),
        ("all:\n  hosts:\n    10:\n", "inv.yml:3", "host name 10 must be a string"),
        ("all:\n  hosts:\n    h:\n      1: x\n", "inv.yml:4", "variable name must be"),
        ("- all\n", "inv.yml:1", "must map group names"),
        ("plugin: aws_ec2\n", "inv.yml:1", "an inventory plugin configuration (plugin: aws_ec2)"),
        ("all:\n  hosts:\n    h:\n  hosts:\n", "inv.yml:4", "duplicate key 'hosts'"),
        ("all:\n  hosts: [\n", "inv.yml:3", "invalid YAML"),
    ],
)
def test_yaml_errors(text: str, where: str, message: str) -> None:
    text_of_error = error(yaml, text)
    assert text_of_error.startswith(where + ":"), text_of_error
    assert message in text_of_error


def test_empty_yaml_is_an_error() -> None:
    assert error(yaml, "# nothing\n").startswith("inv.yml: empty inventory")


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("[web:children]\nweb2\n", "hosts.ini:2", "[web:children] names group 'web2'"),
        ("[a]\nh\n[b:children]\na\nmissing\n", "hosts.ini:5", "group 'missing', which is never"),
        ("[g:vars]\nx=1\n", "hosts.ini:1", "section [g:vars] is for a group that is never"),
        ("[g:child]\n", "hosts.ini:1", "unknown type 'child'"),
        ("[web servers]\n", "hosts.ini:1", "invalid section header"),
        ("[g]\nh1 ansible_port\n", "hosts.ini:2", "expected key=value after the host name"),
        ("[g]\nh\n[g:vars]\njustakey\n", "hosts.ini:4", "expected key=value in [g:vars]"),
        ("[p:children]\nbad name\n", "hosts.ini:2", "expected a group name"),
        ("h1 v='unclosed\n", "hosts.ini:1", "cannot parse host line"),
    ],
)
def test_ini_errors(text: str, where: str, message: str) -> None:
    text_of_error = error(ini, text)
    assert text_of_error.startswith(where + ":"), text_of_error
    assert message in text_of_error


@pytest.mark.parametrize(
    ("fn", "text", "where"),
    [
        (yaml, "all:\n  children:\n    a:\n      children:\n        a:\n", "inv.yml:5"),
        (
            yaml,
            "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n"
            "            a:\n",
            "inv.yml:5",  # a -> b is added last (after b's children): that edge closes it
        ),
        (yaml, "g:\n  children:\n    all:\n", "inv.yml:3"),
        (yaml, "all:\n  children:\n    all:\n", "inv.yml:3"),
        (ini, "[a:children]\nb\n[b:children]\na\n", "hosts.ini:4"),
        (ini, "[a:children]\nb\n[b:children]\nc\n[c:children]\na\n", "hosts.ini:6"),
        (ini, "[a:children]\na\n", "hosts.ini:2"),
    ],
)
def test_group_cycles(fn: Any, text: str, where: str) -> None:
    text_of_error = error(fn, text)
    assert text_of_error.startswith(where + ":"), text_of_error
    assert "creates a cycle" in text_of_error


@pytest.mark.parametrize(
    ("fn", "text", "where", "value"),
    [
        (yaml, "all:\n  hosts:\n    h:\n      ansible_port: 70000\n", "inv.yml:4", "70000"),
        (yaml, "all:\n  hosts:\n    h:\n      ansible_port: ssh\n", "inv.yml:4", "'ssh'"),
        (yaml, "all:\n  hosts:\n    h:\n      ansible_port: true\n", "inv.yml:4", "True"),
        (yaml, "all:\n  hosts:\n    h:\n      ansible_port: 22.5\n", "inv.yml:4", "22.5"),
        (yaml, "all:\n  vars:\n    ansible_port: 0\n  hosts:\n    h:\n", "inv.yml:3", "0"),
        (ini, "[g]\nh\n[g:vars]\nansible_port=-1\n", "hosts.ini:4", "-1"),
        (ini, "h:99999\n", "hosts.ini:1", "99999"),
    ],
)
def test_invalid_port(fn: Any, text: str, where: str, value: str) -> None:
    text_of_error = error(fn, text)
    assert text_of_error.startswith(where + ": ansible_port: host 'h': invalid port " + value)


def test_group_priority_must_be_an_integer() -> None:
    text_of_error = error(yaml, "all:\n  vars:\n    ansible_group_priority: high\n")
    assert text_of_error.startswith("inv.yml:3: ansible_group_priority of group 'all'")


def test_conflicting_duplicate_host_in_one_file() -> None:
    text_of_error = error(
        yaml,
        "all:\n  children:\n    a:\n      hosts:\n        h: {x: 1}\n"
        "    b:\n      hosts:\n        h: {x: 2}\n",
    )
    assert text_of_error.startswith("inv.yml:8: host 'h' is defined twice")
    assert "1 at inv.yml:5 and 2 here" in text_of_error


def test_conflicting_duplicate_host_across_files() -> None:
    text_of_error = error(load, "merge_a.yml", "conflict_b.yml")
    assert "conflict_b.yml:6: host 'web1' is defined twice" in text_of_error
    assert "'ansible_port': 2201 at " in text_of_error
    assert "merge_a.yml:6 and 2299 here" in text_of_error


def test_conflicting_ini_port_shorthand() -> None:
    text_of_error = error(ini, "h:2201\n[g]\nh:2202\n")
    assert text_of_error.startswith("hosts.ini:3: host 'h' is defined twice")


@pytest.mark.parametrize(
    "text",
    [
        "all:\n  children:\n    a:\n      hosts:\n        h: {x: 1}\n    b:\n      hosts:\n"
        "        h: {x: 1, y: 2}\n",
        "all:\n  hosts:\n    h:\n  children:\n    g:\n      hosts:\n        h: {x: 1}\n",
    ],
)
def test_duplicate_host_without_conflict_is_fine(text: str) -> None:
    assert yaml(text).hosts["h"].vars.get("x") == 1


def test_type_matters_in_conflicts() -> None:
    assert "defined twice" in error(ini, "h p=1\n[g]\nh p='x'\n[k]\nh p=1.0\n")


def test_missing_source() -> None:
    assert error(load, "nope.yml") == f"{DATA / 'nope.yml'}: cannot read inventory: " + (
        "No such file or directory"
    )


def test_toml_source_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "inv.toml").write_text("[all]\n")
    assert "a TOML inventory, which the built-in inventory reader does not read" in error(
        Inventory.load, [str(tmp_path / "inv.toml")]
    )


def test_unreadable_yaml_in_directory_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("all:\n  hosts:\n    h:\n")
    (tmp_path / "b.yml").write_text("all:\n  bogus: 1\n")
    assert error(Inventory.load, [str(tmp_path)]).startswith(f"{tmp_path / 'b.yml'}:2: ")


# --- records -----------------------------------------------------------------------------------


def test_records_are_frozen_and_hashable(site: Inventory) -> None:
    host = site.hosts["edge1"]
    with pytest.raises(AttributeError):
        host.name = "x"  # type: ignore[misc]
    assert len({host, site.hosts["edge1"]}) == 1
    assert hash(site.groups["web"]) == hash(site.groups["web"])


def test_empty_inventory_has_all_and_ungrouped() -> None:
    inv = ini("")
    assert list(inv.groups) == ["all", "ungrouped"]
    assert inv.groups["all"].children == ("ungrouped",)
    assert "matches no hosts" in error(inv.select, "all")
