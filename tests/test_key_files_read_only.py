"""Key files on a read-only mount, as a Kubernetes Secret's volume is (a tmpfs whose folder is mode 1777, mounted
read-only): no user can write to them whatever their mode, and they are not warned of as writable. Each engine start
and SIGHUP said that the allow directory was writable by other users and to chmod it, which the mount refuses."""

import shutil
import subprocess
import sys

import pytest

from engine_process import ROOT
from protocols.curve import create_key_files

# run in a user and mount namespace of its own (unshare -rm): a tmpfs made as the kubelet makes a Secret's, its keys
# copied in, then made read-only
_MOUNTED = """
set -e
mount -t tmpfs -o mode=1777 tmpfs "$1"
cp "$2" "$3" "$1"
chmod 0666 "$1/api-keys"
mount -o remount,ro,bind "$1"
exec "$4" -c "$5" "$1"
"""
_READ = """
import logging, sys
logging.basicConfig(format="%(message)s")
from engine.http.api_keys import ApiKeys
from protocols.curve import load_public_keys
load_public_keys(sys.argv[1])
ApiKeys.read(sys.argv[1] + "/api-keys")
"""


def _namespaces_of_ones_own() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _namespaces_of_ones_own(), reason="needs unprivileged user namespaces (unshare -rm)")
def test_key_files_on_a_read_only_mount_are_not_warned_of_as_writable(tmp_path):
    public, _ = create_key_files(tmp_path, "worker")
    api_keys = tmp_path / "api-keys"
    api_keys.write_text("alice alice-key-1\n")
    mount = tmp_path / "secret-volume"
    mount.mkdir()
    said = subprocess.run(
        ["unshare", "-rm", "sh", "-c", _MOUNTED, "sh", mount, public, api_keys, sys.executable, _READ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert said.returncode == 0, said.stderr
    # readable by others is still said of the API keys: a read-only mount keeps no one from reading them
    assert said.stderr.splitlines() == [
        f"{mount}/api-keys is readable by other users (mode 0666): whoever reads it can pose as any client it names,"
        " and whoever writes it can put in a key of their own; chmod 600 it"
    ]
