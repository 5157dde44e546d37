"""The Order domain: commands, events, rules. Pure Python: no framework, no I/O."""
