"""packyard/etcd.py's TLSClient re-does aetcd.Client.connect() over a secure channel, so it relies on
aetcd's private state (pinned to aetcd==1.0.0 in pyproject.toml). When an aetcd upgrade changes any
of it, this fails and says what moved, before TLS connections break in the field."""
from __future__ import annotations

import importlib.metadata
import inspect

import aetcd
from aetcd import rpc, watcher

PINNED = "1.0.0"
CAUSE = ("packyard/etcd.py TLSClient copies aetcd.Client.connect() and sets its private state; "
         "aetcd {found} (written against {pinned}) changed {what}: re-check TLSClient.connect()")


def fail_unless(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(CAUSE.format(found=importlib.metadata.version("aetcd"), pinned=PINNED, what=what))


def test_aetcd_is_the_pinned_version():
    fail_unless(importlib.metadata.version("aetcd") == PINNED, "its version")


def test_the_private_attributes_tlsclient_uses_still_exist():
    client = aetcd.Client(host="127.0.0.1", port=2379, timeout=1)
    for name in ("_connected", "_is_connecting", "_connect_wait_timeout", "_host", "_port", "_options",
                 "_timeout", "_watcher", "metadata", "channel", "kvstub", "clusterstub", "leasestub",
                 "maintenancestub"):
        fail_unless(hasattr(client, name), f"Client.{name} (gone)")
    fail_unless(client._host == "127.0.0.1" and client._port == 2379 and client._timeout == 1,
                "Client._host/_port/_timeout (no longer the constructor's arguments)")
    fail_unless(isinstance(client._options, dict), "Client._options (no longer a dict)")


def test_connect_still_sets_only_what_tlsclient_sets():
    source = inspect.getsource(aetcd.Client.connect)
    for name in ("self.kvstub", "self.clusterstub", "self.leasestub", "self.maintenancestub",
                 "self._watcher", "self._connected.set()", "self._is_connecting"):
        fail_unless(name in source, f"Client.connect() (no longer sets {name})")
    assigned = {line.split("=")[0].strip() for line in source.splitlines()
                if line.strip().startswith("self.") and "=" in line and "==" not in line}
    known = {"self._is_connecting", "self.channel", "self.auth_stub", "self.metadata", "self.kvstub",
             "self.clusterstub", "self.leasestub", "self.maintenancestub", "self._watcher"}
    fail_unless(assigned <= known, f"Client.connect() (now also sets {sorted(assigned - known)})")


def test_stubs_and_watcher_signature():
    for stub in ("KVStub", "ClusterStub", "LeaseStub", "MaintenanceStub", "WatchStub"):
        fail_unless(hasattr(rpc, stub), f"aetcd.rpc.{stub} (gone)")
    params = list(inspect.signature(watcher.Watcher).parameters)
    fail_unless(params[:3] == ["watchstub", "timeout", "metadata"], f"watcher.Watcher's parameters ({params})")
