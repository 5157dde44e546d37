"""The Inventory aggregate (one stream per SKU): commands, events, rule violations, rules."""
