"""gptzoo.server."""
