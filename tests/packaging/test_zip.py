"""dist/bootstrap.zip is what Function Compute runs as /code/bootstrap: the binary at the root,
executable, and the same bytes every time the same commit is packaged."""

import shutil
import stat
import subprocess
import zipfile

from conftest import REPO


def package(dist):
    done = subprocess.run(
        ["make", "--no-print-directory", "package", f"DIST={dist}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return dist / "bootstrap.zip"


def test_zip_holds_the_executable_binary_at_its_root(static_bin, tmp_path):
    zip_path = package(tmp_path / "dist")
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["bootstrap"]
        info = infos[0]
        assert info.create_system == 3, "Unix attributes, or unzip ignores the mode"
        mode = info.external_attr >> 16
        assert stat.S_ISREG(mode), oct(mode)
        assert stat.S_IMODE(mode) == 0o755, oct(mode)
        assert zf.read("bootstrap") == static_bin.read_bytes()
    # unzip (when the machine has it) restores the mode from those bits, as FC's unpacking does.
    if shutil.which("unzip"):
        out = tmp_path / "code"
        subprocess.run(["unzip", "-q", str(zip_path), "-d", str(out)], check=True)
        assert stat.S_IMODE((out / "bootstrap").stat().st_mode) == 0o755


def test_two_packages_of_one_commit_are_byte_identical(tmp_path):
    first = package(tmp_path / "a")
    second = package(tmp_path / "b")
    assert first != second and first.exists() and second.exists()
    assert first.read_bytes() == second.read_bytes()
