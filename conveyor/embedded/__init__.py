"""Plumbing shared by the embedded (SQLite) adapters."""
