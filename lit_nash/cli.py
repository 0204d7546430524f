"""``python -m lit_nash <command> [hydra overrides]``: the command dispatcher.

Hydra reads only overrides, so the command word is taken off ``sys.argv`` and appended back as the
override ``command=<name>``. Appended, not prepended: Hydra's parser needs ``-m`` before the overrides.
The override keeps the command when Lightning re-launches the script for extra processes (it re-runs
``sys.argv``), where the first argument is no longer the command.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "fit": ("lit_nash.fit", "train a policy with an NLHF algorithm (conf/fit.yaml)"),
}

USAGE = "usage: python -m lit_nash <command> [hydra overrides]   (python -m lit_nash <command> --help)"


def _print_commands(stream) -> None:
    print(USAGE, file=stream)
    print("\ncommands:", file=stream)
    for name, (_, about) in COMMANDS.items():
        print(f"  {name:<10} {about}", file=stream)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    relaunched = [a.split("=", 1)[1] for a in args if a.startswith("command=")]
    if args and args[0] in COMMANDS:
        command = args.pop(0)
        args = [a for a in args if not a.startswith("command=")] + [f"command={command}"]
    elif relaunched:
        command = relaunched[-1]
    elif args and args[0] in ("-h", "--help"):
        _print_commands(sys.stdout)
        raise SystemExit(0)
    else:
        if args:
            print(f"lit_nash: unknown command {args[0]!r}\n", file=sys.stderr)
        _print_commands(sys.stderr)
        raise SystemExit(2)
    if command not in COMMANDS:
        print(f"lit_nash: unknown command {command!r}\n", file=sys.stderr)
        _print_commands(sys.stderr)
        raise SystemExit(2)
    sys.argv = [sys.argv[0], *args]
    importlib.import_module(COMMANDS[command][0]).main()
