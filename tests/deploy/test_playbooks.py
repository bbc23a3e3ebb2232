"""The Ansible playbooks parse and their templates render, in every suite run (the deployment
itself is tests/deploy/test_nspawn_deploy.py, opt-in: it takes minutes)."""
import subprocess
import sys
from pathlib import Path

import pytest

ANSIBLE = Path(__file__).resolve().parents[2] / "deploy" / "ansible"
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("playbook", ["site.yml", "upgrade.yml"])
def test_playbook_passes_ansibles_syntax_check(playbook):
    r = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory.example.yml", playbook],
                       cwd=ANSIBLE, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.parametrize("tls", [True, False])
def test_etcd_member_configuration_renders_for_tls_and_plaintext(tmp_path, tls):
    """etcd.env.j2 and packyard_etcd_urls, rendered by Ansible itself for a one-member cluster."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    etcd:\n      hosts:\n        e1: {ansible_host: 10.213.99.2}\n")
    play = tmp_path / "render.yml"
    play.write_text(f"""
- hosts: etcd
  gather_facts: false
  connection: local
  vars:
    packyard_tls: {str(tls).lower()}
    packyard_address: 10.213.99.2
  roles: [packyard_vars]
  tasks:
    - ansible.builtin.template:
        src: {ANSIBLE}/roles/etcd/templates/etcd.env.j2
        dest: {tmp_path}/etcd.env
    - ansible.builtin.copy:
        content: "{{{{ packyard_etcd_urls | trim }}}}"
        dest: {tmp_path}/urls
""")
    env = {"ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:/usr/bin:/bin"}
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(play)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rendered = (tmp_path / "etcd.env").read_text()
    scheme = "https" if tls else "http"
    assert f"ETCD_LISTEN_CLIENT_URLS={scheme}://10.213.99.2:" in rendered
    assert ("ETCD_CLIENT_CERT_AUTH=true" in rendered) == tls
    assert (tmp_path / "urls").read_text().startswith(f"{scheme}://10.213.99.2:")


def test_the_files_the_roles_copy_from_this_checkout_exist():
    """packyard_vars' paths to files of the checkout (relative to the playbook's directory) name real
    files: a path left behind by a move is found here, not by a 5-minute deploy. (The wheelhouse and
    the certificates are made by the deploy, so they are not among them.)"""
    import yaml
    defaults = yaml.safe_load((ANSIBLE / "roles/packyard_vars/defaults/main.yml").read_text())
    paths = {k: defaults[k].replace("{{ playbook_dir }}", str(ANSIBLE))
             for k in ("packyard_alerts_file", "packyard_systemd_dir")}
    for name, path in paths.items():
        assert Path(path).exists(), f"{name}: {path}"
