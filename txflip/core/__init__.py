"""txflip core."""
