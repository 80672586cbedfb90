"""gptzoo.exports."""
