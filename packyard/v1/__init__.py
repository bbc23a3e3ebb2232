"""Generated gRPC API (packyard.v1); regenerate with `python proto/generate.py`."""
