"""The `shepherd` program. `shepherd ask` (run by agents, often) starts without loading Shepherd's server."""

from __future__ import annotations

import sys


def main() -> int:
    if sys.argv[1:2] == ["ask"]:
        from bot.ask import main as ask

        return ask(sys.argv[2:])
    from bot.cli import main as cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
