"""The order-fulfilment process manager: integration facts in, workflow events and commands out.

`inputs.py` holds the facts it reacts to, `events.py` its own (event-sourced) history,
`outgoing.py` what it asks other aggregates to do, and `workflow.py` the rules.
"""
