"""The contract every Runstream component shares.

Schemas (``runstream.proto.v1``), the codec that turns events into bytes and back
(``codec``), validation of decoded events (``validation``), the local spool file format
(``spool``), the error hierarchy (``errors``), configuration names (``config``) and the
ClickHouse tables the consumer writes and the query service reads (``tables``).
Importing this package pulls in protobuf and fastavro only: never grpcio or ClickHouse.
"""
