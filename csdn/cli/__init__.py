"""The ``csdn`` command line (also ``python -m csdn``): ``models``, ``info``, ``convert``, ``embed``,
``match``, ``eval``, ``synth``, ``train``, ``demo``, ``publish``, ``export`` and ``export-info``, one module per kind of command, one error policy in
:mod:`csdn.cli.app`. It sits above every other part of the package; nothing imports it."""

from csdn.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
