"""The Order aggregate: commands, events, rule violations and the rules. Pure Python."""
