"""The ``kpbench`` command: :mod:`kpbench.cli.main` builds the parser and applies the one error
policy; each verb is a module here with ``add_parser(subparsers)`` and ``run(args) -> exit
code``, which parses and checks its flags and calls the logic (none of which lives here)."""
