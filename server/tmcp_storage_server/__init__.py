"""TMCP mini-app storage server: a gRPC key-value store per mini-app user.

Layers (see server/README.md): ``model`` and ``errors`` (plain data), ``core`` (the rules,
written against the Protocols in ``core.ports``), ``store`` (PostgreSQL and SQLite
repositories), ``api`` (gRPC servicers), and ``app`` (the composition root).
"""
