"""The transports: HTTP (FastAPI, ``http``) and gRPC (``grpc``), both thin over the one core
service, with what they share: access control (keys, scopes, rate limits), metrics, logging."""
