import os

# gRPC's C core prints each failed TLS handshake to stderr before ctl can report it as one
# `error:` line; this must be set before grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
