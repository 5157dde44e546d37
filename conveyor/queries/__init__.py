"""Queries: read models and temporal history, served over HTTP and the CLI."""
