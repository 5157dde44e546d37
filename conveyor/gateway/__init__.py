"""The gateway: relays stored events from the event store's global log to RabbitMQ."""
