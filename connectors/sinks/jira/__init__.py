"""Jira Service Management sink: customer requests, transitions, idempotent through a label."""
