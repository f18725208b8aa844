"""The C{flip-tls:} server endpoint string: TLS listeners that survive txflip restarts."""

from txflip.tlsendpoint import TLSServerParser

tlsServerParser = TLSServerParser()
