"""`python -m distrib.lab ...`: the lab commands without the main CLI."""

from __future__ import annotations

import argparse
import sys

from distrib.errors import DistribError
from distrib.lab.cli import register


def main(argv: list[str] | None = None) -> int:
    """Parse `lab` subcommands and run one; expected errors are one line and exit 1."""
    parser = argparse.ArgumentParser(prog="python -m distrib.lab")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    try:
        code: int = args.func(args)
    except DistribError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
