"""txflip twistd."""
