"""Loopback servers for tests, benchmarks and the offline demo. Nothing here reaches the internet."""
