"""Read models: the projections that build them, the store port and its adapters."""
