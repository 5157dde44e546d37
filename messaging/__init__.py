"""RabbitMQ: topology, the wire schema of commands, failure routing, consumers."""
