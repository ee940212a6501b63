"""Test doubles of third-party services."""
