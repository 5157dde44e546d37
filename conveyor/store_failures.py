"""What a store's failure means for the message being handled, shared by every store port.

The ports (conveyor/eventstore/port.py, conveyor/readmodels/port.py) raise subclasses of
these; the failure routing (messaging/failures.py) classifies by them, so the transport
needs no import of any store.
"""


class StoreUnavailable(Exception):
    """A store could not be reached or did not answer in time: a failure of the store, not of
    the message (consuming pauses; the message's attempts are not spent)."""


class StoreRefusedWrite(Exception):
    """A store refused a write for what it is (too large, failing its validation): no retry
    of the same write can succeed."""
