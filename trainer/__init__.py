"""gptzoo.trainer."""
