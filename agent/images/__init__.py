"""Container images from OCI registries (issue 16): pulled with skopeo, kept once per host.

    registry.py   the operator's --registry-config: credentials, CAs, insecure registries
    pull.py       resolve a reference to a digest and copy its blobs (skopeo), with progress
    layers.py     unpack one verified layer blob safely (whiteouts, owners, no escapes)
    store.py      the host's content-addressed store: coalesced pulls, LRU garbage collection
"""
