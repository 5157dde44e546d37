"""The worker entrypoints, one module per kind of worker: command_worker.py, gateway.py,
projector.py; host.py runs any of them in one process (`conveyor run [--only ...]`)."""
