"""The Faust side: the app factory with its agents and timers (app.py) and the delivery cursor that
owns the agents' offsets (delivery.py). Per-record work lives in streams.processors."""
