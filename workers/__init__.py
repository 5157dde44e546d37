"""Process entrypoints: thin hosts that start, run and stop the wired components."""
