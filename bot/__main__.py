"""``python -m bot run`` starts the Discord bot; ``python -m bot generate`` is the relay CLI;
``python -m bot health`` says whether a running bot is connected (Docker's HEALTHCHECK)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    if command == "generate":
        from .cli import main as generate_main

        return generate_main(args[1:])
    if command == "run":
        from .runner import main as run_main

        return run_main(args[1:])
    if command == "health":
        from .health import main as health_main

        return health_main(args[1:])
    asked = command in ("-h", "--help", "help")
    print(
        "usage: python -m bot run            start the Discord bot\n"
        "       python -m bot generate ...   make a picture from the command line (see --help)\n"
        "       python -m bot health         exit 0 if the bot (same NB_DATA_DIR) is connected to Discord",
        file=sys.stdout if asked else sys.stderr,
    )
    return 0 if asked else 2


if __name__ == "__main__":
    sys.exit(main())
