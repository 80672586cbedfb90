"""gptzoo.zoo."""
