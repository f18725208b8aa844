"""
txflip: zero-downtime restarts for Twisted servers.

On SIGHUP a running generation starts its successor with the same command line,
hands it the listening sockets, waits for it to report ready, and only then stops
accepting, drains what it has in flight, and exits.
"""

from txflip._version import __version__

__all__ = ["__version__"]
