"""Building blocks shared by the API-level routing methods (methods/api/): parsing a router's choice, every
model's outcomes on a split (answers, scores, confidences), answering routed queries through the cache, and the
offline router evaluation (quality vs. share of calls to the most expensive model)."""
