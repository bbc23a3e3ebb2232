"""Registry image references in the spec (issue 16): accepted, refused naming the field."""
from __future__ import annotations

import subprocess
import sys

import pytest

from packyard.spec import SpecError, load_yaml

SPEC = """
name: shop
groups:
  - name: web
    kind: container
    resources: {cpu: 0.25, memory: 64Mi}
    container: CONTAINER
"""


def group(container: str):
    return load_yaml(SPEC.replace("CONTAINER", container)).groups[0].container


def test_a_reference_runs_the_images_command_unless_one_is_given():
    c = group("{image: '127.0.0.1:5000/team/app:1', pull: always}")
    assert c.command is None and c.pull == "always"
    assert group("{image: /srv/images/busybox}").command == ["/bin/sleep", "infinity"]
    # specs stored before issue 16 serialise as they did: no pull, the default command
    assert group("{image: /srv/images/busybox}").model_dump() == {
        "image": "/srv/images/busybox", "command": ["/bin/sleep", "infinity"], "env": {}}


@pytest.mark.parametrize("container, field, words", [
    ("{image: team/app}", "groups[0].container.image", "not a registry host"),
    ("{image: 'r.io/App:1'}", "groups[0].container.image", "image reference"),
    ("{image: 'r.io/app@sha256:abc'}", "groups[0].container.image", "image reference"),
    ("{image: 'r.io/app', pull: sometimes}", "groups[0].container.pull", "if-not-present"),
], ids=["no-registry", "uppercase", "short-digest", "bad-pull"])
def test_malformed_references_are_refused_naming_the_field(container, field, words):
    with pytest.raises(SpecError) as e:
        group(container)
    assert any(line.startswith(f"{field}: ") and words in line for line in e.value.errors), e.value.errors


def test_ctl_refuses_a_malformed_reference_with_exit_2(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text(SPEC.replace("CONTAINER", "{image: 'team/app:1'}"))
    r = subprocess.run([sys.executable, "-m", "ctl.main", "--scheduler", "127.0.0.1:1", "submit", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "groups[0].container.image" in r.stderr and "Traceback" not in r.stderr
