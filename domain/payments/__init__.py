"""The Payment aggregate (one stream per order): commands, events, rule violations, rules."""
