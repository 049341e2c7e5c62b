"""Passwords, tokens and signing keys, login throttling, and the request principal."""
