"""text methods."""
