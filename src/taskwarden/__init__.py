"""taskwarden: watch long-running remote tasks until they finish, then archive their outputs."""

__version__ = "0.1.0"
