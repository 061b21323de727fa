"""Relay fan-out (issue 9): the workstation uploads once, hosts pass the archive on.

`tree` plans who feeds whom (pure); `run` carries a batch out over SSH.
"""

from distrib.relay.tree import WORKSTATION, Node, Tree, draw, plan_tree

__all__ = ["WORKSTATION", "Node", "Tree", "draw", "plan_tree"]
