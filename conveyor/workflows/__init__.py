"""Process managers: workflows across aggregates, driven by integration events.

`fulfilment.py` is the order-fulfilment use case (event-sourced state, decide, append,
commands to send), `facts.py` reads its inputs off the wire, `sending.py` publishes its
commands and durable timeouts, `consumer.py` ties them to a queue, and `states.py` keeps a
small read model of workflow states for finding stuck ones.
"""
