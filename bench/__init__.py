"""`make bench`: throughput, latency, rebuild, gateway and memory figures, each a ratio
against a reference measured in the same run."""
