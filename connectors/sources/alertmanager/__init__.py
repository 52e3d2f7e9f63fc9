"""Prometheus Alertmanager webhook (payload version 4)."""
