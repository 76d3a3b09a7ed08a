"""Federated learning strategies, compression and aggregation."""
