"""Leased checkpoints on both read stores: leases expire by the store's clock, whatever
each host's own clock says, and a holder is fenced on its name as well as the revision."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.readmodels.checkpoints import CHECKPOINTS, LeasedCheckpoint, LeaseLost
from conveyor.readmodels.port import ReadModelStore


def fast_host() -> float:
    """The clock of a host that runs a minute ahead."""
    return time.time() + 60


def slow_host() -> float:
    """The clock of a host that runs a minute behind."""
    return time.time() - 60


async def test_a_host_whose_clock_runs_ahead_does_not_take_a_live_lease(
    read_store: ReadModelStore,
) -> None:
    holder = LeasedCheckpoint(read_store, "gateway", "holder", ttl=30)
    assert await holder.try_acquire()
    ahead = LeasedCheckpoint(read_store, "gateway", "ahead", ttl=30, clock=fast_host)
    assert not await ahead.try_acquire()
    await holder.save(7)  # still the holder's
    assert (await holder.read())[:2] == (7, "holder")


async def test_a_host_whose_clock_runs_behind_takes_over_an_expired_lease(
    read_store: ReadModelStore,
) -> None:
    holder = LeasedCheckpoint(read_store, "gateway", "holder", ttl=0.5)
    assert await holder.try_acquire()
    await holder.save(3)
    behind = LeasedCheckpoint(read_store, "gateway", "behind", ttl=0.5, clock=slow_host)
    assert not await behind.try_acquire()
    await asyncio.sleep(1.0)  # the holder stopped renewing: its lease ran out
    assert await behind.try_acquire()
    assert behind.position == 3
    with pytest.raises(LeaseLost):
        await holder.save(4)


async def test_a_holder_whose_revision_comes_round_again_is_still_fenced_off(
    read_store: ReadModelStore,
) -> None:
    first = LeasedCheckpoint(read_store, "gateway", "first", ttl=30)
    assert await first.try_acquire()
    # The checkpoint document is gone (a write rolled back by a failover, the collection
    # dropped by hand) and another process creates it again: the same revision, 1.
    await read_store.drop_collection(CHECKPOINTS)
    await read_store.ensure_collection(CHECKPOINTS)
    second = LeasedCheckpoint(read_store, "gateway", "second", ttl=30)
    assert await second.try_acquire()
    with pytest.raises(LeaseLost):
        await first.save(99)
    assert (await second.read())[:2] == (0, "second")
    await second.save(5)
    assert (await second.read())[:2] == (5, "second")
