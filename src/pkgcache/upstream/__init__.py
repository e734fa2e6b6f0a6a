"""Upstream access shared by the PyPI and conda sides: ordered mirrors, failover, cool-down, plain headers."""
