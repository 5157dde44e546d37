"""`conveyor asyncapi`: the AsyncAPI document and the JSON Schemas of the wire contracts."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from conveyor.cli.app import console, load_settings


def asyncapi(
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    yaml: Annotated[bool, typer.Option("--yaml", help="YAML instead of JSON.")] = False,
    schemas: Annotated[
        str | None,
        typer.Option(
            help="Also write the JSON Schemas of commands, outcomes and integration events "
            "into this directory (docs/schemas)."
        ),
    ] = None,
) -> None:
    """The AsyncAPI 3.0 document of every channel: commands, outcomes, integration events."""
    from pathlib import Path

    from conveyor.asyncapi import document_text, write_json_schemas

    if schemas is not None:
        written = write_json_schemas(Path(schemas))
        Console(stderr=True).print(f"wrote {len(written)} JSON Schemas under {schemas}")
    text = document_text(load_settings(), yaml=yaml)
    if output is None:
        sys.stdout.write(text)
        return
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
    console.print(f"wrote {output}")
