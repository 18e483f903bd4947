"""Operator tooling: the admin subcommands of ``python -m tmcp_storage_server``.

``cli`` parses arguments and prints; ``commands`` calls the core services; ``parts``
builds them the way the server does (``app.py`` builders), so that the command line's
writes reach running servers' caches and watchers; ``dump`` is the export format.
"""
