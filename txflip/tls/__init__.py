"""txflip tls."""
