"""The ops dashboard: static files (HTML, JavaScript, CSS) that the HTTP API serves as they are."""
