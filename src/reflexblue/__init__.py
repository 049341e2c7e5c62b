"""ReflexBlue External API server: authentication, authorisation and the resource API."""

__version__ = "0.1.0"
