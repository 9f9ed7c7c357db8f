"""taskwarden's version, in a module of its own so that any layer can name it without importing
the package's top (which offers the API client)."""

__version__ = "0.1.0"
