"""`python -m chaos.worker --only …`: `conveyor run` with fault-injection hooks for the chaos
harness. Production never runs this module; the hooks exist only here, wrapped around the
normal command handler and projection applier before the normal WorkerHost starts.

Every hook is off unless its variable is set, and turns off again once the file named by
CONVEYOR_CHAOS_FIXED_FLAG exists ("the fix has been deployed"):

CONVEYOR_CHAOS_FAIL_ORDER_PREFIX
    every command for an order whose id starts with this prefix fails with a transient error
    (ChaosTransientFailure): it goes round the retry ladder and ends in the DLQ.
CONVEYOR_CHAOS_POISON_ORDER_PREFIX (+ CONVEYOR_CHAOS_POISON_PROJECTION, default order_summary)
    that projection cannot apply any event of such an order (ContractViolation): the event
    is dead-lettered at once.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

from conveyor.application.commands import CommandEnvelope, CommandHandler, CommandOutcome
from conveyor.readmodels.applier import ProjectionApplier, Result
from conveyor.readmodels.projections import ContractViolation
from messaging.contracts.orders import OrderEvent as IntegrationEvent

FAIL_ORDER_PREFIX = "CONVEYOR_CHAOS_FAIL_ORDER_PREFIX"
POISON_ORDER_PREFIX = "CONVEYOR_CHAOS_POISON_ORDER_PREFIX"
POISON_PROJECTION = "CONVEYOR_CHAOS_POISON_PROJECTION"
FIXED_FLAG = "CONVEYOR_CHAOS_FIXED_FLAG"


class ChaosTransientFailure(RuntimeError):
    """Injected by the chaos harness: looks like a store that keeps timing out."""


def _fixed() -> bool:
    flag = os.environ.get(FIXED_FLAG)
    return flag is not None and Path(flag).exists()


def install_faults() -> list[str]:
    """Wrap the handler and the applier as the environment asks; the names of the hooks."""
    installed = []
    fail_prefix = os.environ.get(FAIL_ORDER_PREFIX)
    if fail_prefix:
        original_handle = CommandHandler.handle

        @functools.wraps(original_handle)
        async def handle(self: CommandHandler, envelope: CommandEnvelope) -> CommandOutcome:
            if (envelope.aggregate_id or "").startswith(fail_prefix) and not _fixed():
                raise ChaosTransientFailure(
                    f"chaos: commands for {envelope.aggregate_id} always fail (until fixed)"
                )
            return await original_handle(self, envelope)

        CommandHandler.handle = handle  # type: ignore[method-assign]
        installed.append(f"commands fail for orders {fail_prefix}*")

    poison_prefix = os.environ.get(POISON_ORDER_PREFIX)
    if poison_prefix:
        projection = os.environ.get(POISON_PROJECTION, "order_summary")
        original_apply = ProjectionApplier.apply

        @functools.wraps(original_apply)
        async def apply(
            self: ProjectionApplier, event: IntegrationEvent, collection: str | None = None
        ) -> Result:
            if (
                self.projection.name == projection
                and event.order_id.startswith(poison_prefix)
                and not _fixed()
            ):
                raise ContractViolation(
                    f"chaos: {projection} cannot apply {event.type} of {event.order_id} "
                    "(until fixed)"
                )
            return await original_apply(self, event, collection)

        ProjectionApplier.apply = apply  # type: ignore[method-assign]
        installed.append(f"{projection} cannot apply events of orders {poison_prefix}*")
    return installed


def main(argv: list[str] | None = None) -> Any:
    hooks = install_faults()
    if hooks:
        print("chaos hooks: " + "; ".join(hooks), file=sys.stderr, flush=True)
    from conveyor.cli import main as conveyor_main

    sys.argv = ["conveyor", "run", *(sys.argv[1:] if argv is None else argv)]
    return conveyor_main()


if __name__ == "__main__":
    main()
