"""I/O-free core: permission catalogue, API-version policies, access decisions, resource schemas."""
