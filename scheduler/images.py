"""Which ready hosts hold a registry image, and how many of its bytes (issue 16: placement's image
locality). The agents publish what their image stores hold in their node records (each image's
digest, the references last resolved to it, its size); this index turns that around, per
reference and per digest, and is built again only when a node record changed."""
from __future__ import annotations

from collections import defaultdict

from packyard import imageref
from scheduler.state import ClusterState


class ImageIndex:
    def __init__(self, state: ClusterState):
        self.state = state
        self._version = -1
        self._holders: dict[str, dict[str, int]] = {}   # reference or digest -> {node: bytes}

    def holders(self, image: str) -> dict[str, int]:
        """{node: bytes of the image it holds} for the spec's `container.image`: a digest pin
        matches that digest, a tag the hosts whose last pull of that reference is still kept."""
        try:
            ref = imageref.parse(image)
        except imageref.ReferenceError:
            return {}
        if self._version != self.state.nodes_version:
            self._holders = _index(self.state)
            self._version = self.state.nodes_version
        return dict(self._holders.get(ref.digest or str(ref), {}))


def _index(state: ClusterState) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for name, node in state.nodes.items():
        for image in node.images if isinstance(node.images, list) else ():
            if not isinstance(image, dict):
                continue                 # an agent's record is read, never trusted to be well formed
            size = image.get("bytes")
            size = size if isinstance(size, int) and size > 0 else 1
            refs = image.get("references")
            for key in (image.get("digest"), *(refs if isinstance(refs, list) else ())):
                if isinstance(key, str) and key:
                    out[key][name] = max(size, out[key].get(name, 0))
    return dict(out)
