"""Thin Faust agents: decode -> stages -> send | dead-letter."""
