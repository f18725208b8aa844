"""
C{python -m txflip}: C{run} starts a program under a generation (see
L{txflip.launcher}); C{reload} and C{status} talk to a running server, as the
C{txflip} command does.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        from txflip.launcher import main as run

        return run(argv[1:])
    from txflip.control.client import main as client

    return client(argv)


if __name__ == "__main__":
    sys.exit(main())
