"""The ``dcasenet-hub`` command line: one thin module per command group (parse -> one library call -> print).

``python -m dcasenet_hub.cli`` and the ``dcasenet-hub`` script both run :func:`main`.
"""

from dcasenet_hub.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
