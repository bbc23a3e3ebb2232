"""The few rtnetlink requests the agent makes (links, IPv4 addresses, a default route), on a plain
netlink socket.

pyroute2 did this before; importing it loads ~220 modules (its `__init__` pulls in NDB, IPDB,
sqlite3, unittest.mock, conntrack, wireguard, ...) and cost the agent ~9 MiB of its 60 MiB budget
(issue 5). The messages are the kernel's (linux/rtnetlink.h, linux/if_link.h, linux/veth.h).

A socket talks to the network namespace of the thread that opened it. Calls block for a few
microseconds to milliseconds: run them in a worker thread from async code.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE = 20, 22, 24
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
RTA_GATEWAY = 5
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_HDR = struct.Struct("=IHHII")          # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")      # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")       # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")    # rtmsg
_ATTR = struct.Struct("=HH")            # rtattr: len, type


class NetlinkError(OSError):
    """The kernel refused a request; `errno` and `strerror` say why."""


@dataclass(frozen=True)
class Address:
    address: str
    prefixlen: int
    index: int
    label: str | None


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    return _ATTR.pack(_ATTR.size + len(payload), kind) + payload + b"\0" * (_align(len(payload)) - len(payload))


def _name(text: str) -> bytes:
    return text.encode() + b"\0"


def parse_attrs(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, i)
        if length < _ATTR.size:
            break
        out[kind & 0x3FFF] = data[i + _ATTR.size:i + length]     # without NLA_F_NESTED / BYTEORDER
        i += _align(length)
    return out


class Rtnl:
    """One NETLINK_ROUTE socket; use as a context manager."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one message; return the (type, payload) replies, or raise NetlinkError."""
        self._seq += 1
        seq = self._seq
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            i = 0
            while i + _HDR.size <= len(data):
                length, mtype, _flags, mseq, _pid = _HDR.unpack_from(data, i)
                payload = data[i + _HDR.size:i + length]
                i += _align(length)
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return replies
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return replies                                  # the ACK
                replies.append((mtype, payload))
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return replies

    # links

    def link_lookup(self, ifname: str) -> list[int]:
        """[index] of the link called `ifname`, or [] (pyroute2's convention)."""
        try:
            replies = self.request(RTM_GETLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _name(ifname)))
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return []
            raise
        return [_IFINFO.unpack_from(p)[2] for t, p in replies if t == RTM_NEWLINK]

    def link_names(self) -> list[str]:
        names = []
        for t, p in self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFO.pack(0, 0, 0, 0, 0)):
            if t == RTM_NEWLINK and IFLA_IFNAME in (a := parse_attrs(p[_IFINFO.size:])):
                names.append(a[IFLA_IFNAME].rstrip(b"\0").decode())
        return names

    def add_bridge(self, ifname: str) -> None:
        info = attr(IFLA_INFO_KIND, _name("bridge"))
        self._new_link(attr(IFLA_IFNAME, _name(ifname)) + attr(IFLA_LINKINFO, info))

    def add_veth(self, ifname: str, peer: str, peer_netns_fd: int | None = None) -> None:
        """A veth pair; the peer end goes into the namespace `peer_netns_fd` when given."""
        peer_attrs = attr(IFLA_IFNAME, _name(peer))
        if peer_netns_fd is not None:
            peer_attrs += attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        data = attr(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + peer_attrs)
        info = attr(IFLA_INFO_KIND, _name("veth")) + attr(IFLA_INFO_DATA, data)
        self._new_link(attr(IFLA_IFNAME, _name(ifname)) + attr(IFLA_LINKINFO, info))

    def _new_link(self, attrs: bytes) -> None:
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, _IFINFO.pack(0, 0, 0, 0, 0) + attrs)

    def set_link(self, index: int, up: bool | None = None, master: int | None = None) -> None:
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        attrs = attr(IFLA_MASTER, struct.pack("=I", master)) if master is not None else b""
        self.request(RTM_NEWLINK, NLM_F_ACK, _IFINFO.pack(0, 0, index, flags, change) + attrs)

    def del_link(self, index: int) -> None:
        self.request(RTM_DELLINK, NLM_F_ACK, _IFINFO.pack(0, 0, index, 0, 0))

    # IPv4 addresses and routes

    def add_addr(self, index: int, address: str, prefixlen: int) -> None:
        raw = ipaddress.IPv4Address(address).packed
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                     _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                     + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw))

    def addrs(self, index: int | None = None) -> list[Address]:
        """The IPv4 addresses of every link, or of link `index`."""
        out = []
        for t, p in self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
            if t != RTM_NEWADDR:
                continue
            _family, prefixlen, _flags, _scope, ifindex = _IFADDR.unpack_from(p)
            a = parse_attrs(p[_IFADDR.size:])
            raw = a.get(IFA_ADDRESS) or a.get(IFA_LOCAL)
            if raw is None or (index is not None and ifindex != index):
                continue
            label = a[IFA_LABEL].rstrip(b"\0").decode() if IFA_LABEL in a else None
            out.append(Address(socket.inet_ntoa(raw), prefixlen, ifindex, label))
        return out

    def add_default_route(self, gateway: str) -> None:
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                     _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                                 RTN_UNICAST, 0)
                     + attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed))
