"""The admin command line (``taskmill``, or ``taskmill-sidecar admin`` in the frozen build):
for the person looking after an app's queue, never part of the JSON-RPC process.

Each subcommand is a module here with ``NAME``, ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args, out) -> exit code``; :mod:`sidecar.admin.__main__`
lists them. Human output by default, ``--json`` for scripts (one JSON document on stdout).
:mod:`.common` holds what they share (``--db``/``--app-id``, opening the database read-only or
under the lock, tables) and :mod:`.output` where they write.
"""
