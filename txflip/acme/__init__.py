"""txflip acme."""
