"""The C{flip-tls:} server endpoint string: TLS listeners that survive txflip restarts."""

from txflip.tls.endpoint import TLSServerParser

tlsServerParser = TLSServerParser()
