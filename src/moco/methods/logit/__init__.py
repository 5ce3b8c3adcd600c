"""logit methods."""
