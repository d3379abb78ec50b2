"""The ``csdn`` command's parser and its one error policy: each sub-command module registers its
commands here, and any failure ends as ``csdn: error: <message>`` with exit status 2.

``--debug`` (before or after the sub-command) lets the exception through, traceback and all;
Ctrl-C ends with ``csdn: interrupted`` and status 130.
"""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from collections.abc import Sequence

from csdn.cli import demo, embed, export, match, models, publish, synth, train
from csdn.cli import eval as evaluate
from csdn.errors import CSDNError, cli_flags

# Each registers its sub-commands: ``register(commands) -> [parser, ...]``, every parser
# with ``set_defaults(func=handler)``, ``handler(args) -> exit code``.
COMMAND_MODULES = (models, embed, match, evaluate, synth, train, export, demo, publish)

# Errors whose message is written for the user (csdn's own, bad values, files and disks);
# any other exception is unexpected, and its message says where the traceback is.
USER_ERRORS = (CSDNError, OSError, ValueError)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DEBUG_HELP = "on an error, show the Python traceback instead of the one-line message"


def error_message(error: Exception) -> str:
    """The text after ``csdn: error: `` for ``error``."""
    message = str(error).strip()
    if isinstance(error, OSError) and not isinstance(error, CSDNError) and error.errno in _DISK_FULL:
        where = f" writing {error.filename}" if error.filename else ""
        return f"no space left on the disk{where}: free space there (or write somewhere else) and run again"
    if isinstance(error, USER_ERRORS):
        return message or type(error).__name__
    return f"{message or 'no message'} ({type(error).__name__}; run with --debug for the traceback)"


def build_parser() -> argparse.ArgumentParser:
    from csdn.version import __version__

    parser = argparse.ArgumentParser(
        prog="csdn", description="CSDN models for visible-infrared person re-identification."
    )
    parser.add_argument("--version", action="version", version=f"csdn-reid {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMAND_MODULES:
        for command in module.register(commands):
            # SUPPRESS: absent after the command, it leaves the value given before it
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
            command.set_defaults(flags=_flags(command))
    return parser


def _flags(command: argparse.ArgumentParser) -> dict[str, str]:
    """``dest -> first long flag`` of a command, so errors name ``--ids-per-batch`` rather than ``ids_per_batch``.

    argparse has no public list of a parser's arguments; ``_actions`` is the stable one every
    argparse extension reads.
    """
    return {
        action.dest: next((f for f in action.option_strings if f.startswith("--")), action.option_strings[0])
        for action in command._actions
        if action.option_strings
    }


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as ``csdn: warning: ...`` lines: on the command line the Python source line means nothing."""
    print(f"csdn: warning: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``csdn`` with ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for the run records that keep it
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        with cli_flags(args.flags), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("csdn: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        # one write: under torchrun every rank reports, and whole lines do not interleave
        sys.stderr.write(f"csdn: error: {error_message(error)}\n")
        sys.stderr.flush()
        return 2
