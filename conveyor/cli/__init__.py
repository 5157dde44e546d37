"""The `conveyor` command line, one module per command group; the table of commands is
here, in the order `conveyor --help` lists them.

run, demo (run.py) · send (send.py) · history, query … (queries.py) · status (status.py) ·
projections rebuild (projections.py) · dlq … (dlq.py) · workflows … (workflows.py) ·
asyncapi (asyncapi.py).
What they share (the app, one-line failures and exit codes) is in app.py; opening and
closing the stores in stores.py.
"""

from __future__ import annotations

import sys

from conveyor.cli.app import CliError, app
from conveyor.cli.asyncapi import asyncapi
from conveyor.cli.dlq import dlq_app
from conveyor.cli.projections import projections_app
from conveyor.cli.queries import history, query_app
from conveyor.cli.run import demo, run
from conveyor.cli.send import send
from conveyor.cli.status import status
from conveyor.cli.workflows import workflows_app
from conveyor.settings import Settings

app.command()(run)
app.command()(send)
app.command()(history)
app.command()(status)
app.command()(demo)
app.command()(asyncapi)
app.add_typer(query_app, name="query")
app.add_typer(projections_app, name="projections")
app.add_typer(dlq_app, name="dlq")
app.add_typer(workflows_app, name="workflows")


def _redacted(message: str) -> str:
    """Last line of defence: a library's exception text may quote a URL with its password."""
    try:
        return Settings().redact(message)
    except Exception:  # the configuration itself is what failed: nothing to redact with
        return message


def main() -> None:
    try:
        app()
    except CliError as error:
        print(f"conveyor: error: {_redacted(str(error))}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
