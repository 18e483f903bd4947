"""Repositories (PostgreSQL, SQLite) behind ``core.ports.Repository``."""
