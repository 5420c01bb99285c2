"""Saying when a scan is beyond the model: input checks, feature-distance scoring, drift."""
