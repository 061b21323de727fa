"""The whole manual workflow around image distribution (issue 7): commit a container, back
containers up to the workstation and restore them, push to a site registry and pull from it.

- `spec`: pure names and playbook keys (no I/O)
- `archives`: reading a backup archive (manifest, config, checksums) on the workstation
- `steps`: per-host steps plugged into executor.run_plan (commit, backup, push, pull)
- `flow`: what `distrib run` adds for plays with `commit:` or `registry:`
- `cli`: the `distrib commit | backup | restore` commands

Importing this package has no side effects and imports nothing heavy.
"""
