"""The rules of the service, written against the Protocols in ``ports``.

Nothing here knows gRPC, generated code, SQL drivers or Redis.
"""
