"""distrib: Ansible-style multi-host Docker image distribution over SSH."""

from __future__ import annotations

__version__ = "0.1.0"
