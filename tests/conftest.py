"""Shared pytest configuration: fixture plugins used across test modules."""

pytest_plugins = ["registry_fixtures"]
