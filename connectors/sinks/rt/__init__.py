"""Request Tracker 5 sink over the REST 2 API, proven against a real RT."""
