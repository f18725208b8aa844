"""txflip control."""
