"""The C{flip} twistd plugin: zero-downtime restarts for any Twisted app."""

from twisted.application.service import ServiceMaker

flip = ServiceMaker(
    "txflip",
    "txflip.twistd.options",
    "Serve a Twisted app with zero-downtime restarts on SIGHUP.",
    "flip",
)
