"""agent/rtnl.py: attribute packing, then read-only requests to the kernel (no root needed)."""
from __future__ import annotations

import errno
import struct

import pytest

from agent import rtnl


def test_attributes_are_padded_and_parse_back():
    packed = rtnl.attr(rtnl.IFLA_IFNAME, b"eth0\0") + rtnl.attr(rtnl.IFLA_MASTER, struct.pack("=I", 7))
    assert len(packed) % 4 == 0
    attrs = rtnl.parse_attrs(packed)
    assert attrs[rtnl.IFLA_IFNAME] == b"eth0\0"
    assert struct.unpack("=I", attrs[rtnl.IFLA_MASTER]) == (7,)


def test_lookup_dump_and_refusal():
    with rtnl.Rtnl() as r:
        assert r.link_lookup("lo") == [1]
        assert r.link_lookup("pynosuchlink") == []
        assert "lo" in r.link_names()
        assert any(a.address == "127.0.0.1" and a.prefixlen == 8 and a.label == "lo" for a in r.addrs(1))
        with pytest.raises(rtnl.NetlinkError) as e:
            r.del_link(1 << 30)                   # no such index: the kernel's errno comes back
        assert e.value.errno in (errno.ENODEV, errno.EPERM)
