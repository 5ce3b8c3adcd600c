"""api methods."""
