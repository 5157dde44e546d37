"""Wire contracts, one module per aggregate (`orders.py`), and the types they share (`wire.py`).

Pure pydantic: no transport, no conveyor import. An aggregate's definition
(conveyor/aggregates/<name>.py) binds its contract to its domain rules."""
