"""txflip systemd."""
