"""Use cases over the domain and the event-store port: handling commands, temporal queries."""
