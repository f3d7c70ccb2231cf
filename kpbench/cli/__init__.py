"""The ``kpbench`` command: :mod:`kpbench.cli.main` builds the parser and applies the one error
policy; each verb is a module here with ``add_parser(subparsers)`` and ``run(args) -> exit
code``, which parses and checks its flags and calls the logic (none of which lives here)."""
from __future__ import annotations

import argparse


def add_verb(subparsers, name: str, run, help: str, description: str | None = None,
             doc: str | None = None, **options) -> argparse.ArgumentParser:
    """The parser of ``kpbench NAME`` (``func``: ``run``), described by ``description``
    (wrapped) or by ``doc``, a module's doc shown as it is written."""
    if doc is not None:
        options.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    parser = subparsers.add_parser(name, help=help, description=doc or description, **options)
    parser.set_defaults(func=run)
    return parser


def doc_body(doc: str) -> str:
    """A module doc without its first paragraph (the title): a verb's description."""
    return doc.split("\n\n", 1)[1]
