"""gptzoo.cli."""
