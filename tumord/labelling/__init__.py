"""Learning from the site: filing a person's label for a verdict, and choosing what to label next."""
