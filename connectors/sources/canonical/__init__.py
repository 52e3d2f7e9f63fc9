"""The canonical Alert as JSON, for producers that speak HTTP rather than Avro."""
