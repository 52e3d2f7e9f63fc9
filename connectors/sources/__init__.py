"""Sources: turn external payloads into canonical records on Kafka."""
