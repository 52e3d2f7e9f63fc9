"""Shared kernel: settings, topics, models, serde, dead letters and telemetry."""
