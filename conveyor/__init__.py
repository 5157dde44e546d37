"""conveyor's composition root, settings and command-line interface."""
