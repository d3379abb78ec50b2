"""The ``csdn`` command's parser and its one error policy: each sub-command module registers its
commands here, and any failure ends as ``csdn: error: <message>`` with exit status 2.

``--debug`` (before or after the sub-command) lets the exception through, traceback and all;
Ctrl-C ends with ``csdn: interrupted`` and status 130.

Where torch is not installed, ``csdn --help`` still lists every command: a command whose module
cannot be imported without torch is registered as a stand-in that says, in one line, that it
needs PyTorch (its own ``--help`` included).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from csdn.errors import CSDNError, cli_flags
from csdn.retrieval.checks import torch_installed
from csdn.system.allocator import keep_freed_memory

# Each module (csdn.cli.<name>) registers its sub-commands: ``register(commands) -> [parser, ...]``, every
# parser with ``set_defaults(func=handler)``, ``handler(args) -> exit code``. The modules import no torch
# at load (their handlers do), so every command's --help works where torch is not installed.
COMMAND_MODULES = ("models", "embed", "match", "eval", "synth", "train", "export", "demo", "publish")
NEEDS_TORCH = "needs PyTorch, which is not installed here: pip install torch (https://pytorch.org/get-started/locally/)"

# Errors whose message is written for the user (csdn's own, bad values, files and disks);
# any other exception is unexpected, and its message says where the traceback is.
USER_ERRORS = (CSDNError, OSError, ValueError)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DEBUG_HELP = "on an error, show the Python traceback instead of the one-line message"


def one_line(message: str) -> str:
    """A message of several lines as one: a command on an indented line of its own becomes `quoted`,
    and a line that ends without punctuation before a sentence gets a full stop (or ``;``)."""
    parts: list[str] = []
    command = False
    for raw in message.strip().splitlines():
        line = raw.strip()
        if not line:
            continue
        was_command, command = command, raw[:1].isspace() and not line.startswith(("-", "*"))
        if command:
            line = f"`{line}`"
        elif parts and not was_command and not parts[-1].endswith((":", ".", ";", ",", "(")):
            parts[-1] += "." if line[:1].isupper() else ";"
        parts.append(line)
    return " ".join(parts)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors follow the one-line policy: ``csdn: error: <cmd>: <problem> (see csdn <cmd>
    --help)`` and exit status 2; the usage itself stays one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("csdn").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"csdn: error: {where}{one_line(message)} (see {self.prog} --help)\n")


def error_message(error: Exception, command: str = "this command") -> str:
    """The text after ``csdn: error: `` for ``error`` (raised by ``command``, e.g. ``csdn embed``), on one line."""
    message = one_line(str(error))
    if isinstance(error, OSError) and not isinstance(error, CSDNError) and error.errno in _DISK_FULL:
        where = f" writing {error.filename}" if error.filename else ""
        return f"no space left on the disk{where}: free space there (or write somewhere else) and run again"
    if isinstance(error, USER_ERRORS):
        return message or type(error).__name__
    if isinstance(error, ImportError) and not torch_installed():
        return f"{command} {NEEDS_TORCH}"
    return f"{message or 'no message'} ({type(error).__name__}; run with --debug for the traceback)"


def build_parser() -> argparse.ArgumentParser:
    from csdn.version import __version__

    parser = Parser(prog="csdn", description="CSDN models for visible-infrared person re-identification.")
    parser.add_argument("--version", action="version", version=f"csdn-reid {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        for command in importlib.import_module(f"csdn.cli.{name}").register(commands):
            # SUPPRESS: absent after the command, it leaves the value given before it
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
            command.set_defaults(flags=_flags(command), command_parser=command)
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
    """Run ``csdn`` with ``argv`` (default: the process's arguments); returns the exit status.

    Called without ``argv`` it is the ``csdn`` command owning its process, and it sets the
    allocator to keep freed memory (:mod:`csdn.system.allocator`); a caller passing ``argv``
    keeps its process as it is.
    """
    if argv is None:
        keep_freed_memory()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # told by the command's own parser, so the message names the command
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
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
        sys.stderr.write(f"csdn: error: {error_message(error, args.command_parser.prog)}\n")
        sys.stderr.flush()
        return 2
