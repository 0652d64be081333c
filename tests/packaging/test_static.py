"""The bootstrap that ships is static: no dynamic loader, no libc, and it serves from a root
filesystem that holds nothing but itself (as in the scratch image, and on any FC runtime)."""

import os
import shutil
import subprocess

import pytest

from conftest import free_port, wait_until


def test_file_and_ldd_say_static(static_bin, static_client):
    for binary in (static_bin, static_client):
        kind = subprocess.run(["file", "-L", str(binary)], capture_output=True, text=True).stdout
        assert "x86-64" in kind, kind
        assert "statically linked" in kind or "static-pie linked" in kind, kind
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        said = ldd.stdout + ldd.stderr
        assert "not a dynamic executable" in said or "statically linked" in said, said


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root (CI runs as root)")
def test_serves_from_an_empty_root(static_bin, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(static_bin, root / "bootstrap")
    assert sorted(p.name for p in root.iterdir()) == ["bootstrap"]
    # The children get an empty environment, so find chroot (in /usr/sbin) with ours.
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    port = free_port()
    log = open(tmp_path / "chroot.log", "wb")
    proc = subprocess.Popen(
        [chroot, str(root), "/bootstrap", "--port", str(port)],
        env={},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def probe():
            if proc.poll() is not None:
                pytest.fail(f"exited {proc.returncode}: {(tmp_path / 'chroot.log').read_text()}")
            # The probe also runs inside the empty root, as a HEALTHCHECK would.
            done = subprocess.run(
                [chroot, str(root), "/bootstrap", "probe", "--addr", f"127.0.0.1:{port}"],
                capture_output=True,
                text=True,
                env={},
            )
            return done.returncode == 0 and "SERVING" in done.stdout

        wait_until("SERVING from the empty root", probe, interval=0.2)
    finally:
        proc.terminate()
        code = proc.wait(timeout=15)
        log.close()
    assert code == 0, (tmp_path / "chroot.log").read_text()
    assert "drain summary" in (tmp_path / "chroot.log").read_text()
