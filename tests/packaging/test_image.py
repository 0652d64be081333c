"""The container image: built from the top-level Containerfile with podman, run the way Cloud Run
or Knative run it (PORT in the environment, SIGTERM then SIGKILL on stop), healthy by its own
HEALTHCHECK, and stopped cleanly within the drain timeout.

podman runs with its own storage under the test's temporary directory, so the test leaves no
image or container behind and does not touch the machine's podman state.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import REPO, free_port, wait_until

IMAGE = "localhost/bootstrap:packaging-test"


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: make test-packaging-deps installs it")
    base = tmp_path_factory.mktemp("podman")
    # Containers inside a container cannot raise their rlimits; podman's default tries to.
    conf = base / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    cmd = [
        "podman",
        "--root", str(base / "root"),
        "--runroot", str(base / "run"),
        "--storage-driver", "vfs",
        "--runtime", "runc",
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
    ]  # fmt: skip

    def run(*args, check=True, timeout=300):
        done = subprocess.run(
            cmd + list(args), env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            pytest.fail(f"podman {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    yield run
    run("rm", "--all", "--force", check=False)
    run("rmi", "--all", "--force", check=False)


@pytest.fixture(scope="module")
def image(podman, static_bin):
    # What `make image` runs, with the test's own storage.
    podman("build", "--format", "docker", "-f", str(REPO / "Containerfile"), "-t", IMAGE, str(REPO))
    return IMAGE


def test_image_is_scratch_non_root_with_entrypoint_and_healthcheck(podman, image, static_bin):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == "65532:65532"
    assert "8089/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["/bootstrap"]
    # podman shows the docker-format HEALTHCHECK beside Config.
    healthcheck = config.get("Healthcheck") or info["Healthcheck"]
    assert healthcheck["Test"] == ["CMD", "/bootstrap", "probe"]
    # FROM scratch: one layer, holding the binary and nothing else of size.
    assert len(info["RootFS"]["Layers"]) == 1
    assert info["Size"] < static_bin.stat().st_size + 1024 * 1024, info["Size"]


def test_container_serves_probes_healthy_and_stops_cleanly(podman, image):
    port = free_port()
    name = f"bootstrap-test-{port}"
    # The platforms pass the port in PORT; the host network keeps the test free of CNI plugins.
    podman("run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}", image)
    try:

        def serving():
            state = json.loads(podman("inspect", name).stdout)[0]["State"]
            if not state["Running"]:
                pytest.fail(f"container stopped: {podman('logs', name, check=False).stdout}")
            # probe follows PORT, like the HEALTHCHECK does inside the container.
            return podman("exec", name, "/bootstrap", "probe", check=False).returncode == 0

        wait_until("the container to be SERVING", serving, interval=0.5, timeout=60)
        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr

        began = time.monotonic()
        podman("stop", "-t", "10", name, timeout=60)
        took = time.monotonic() - began
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name)
        out = logs.stdout + logs.stderr
        assert state["ExitCode"] == 0, f"exit {state['ExitCode']}:\n{out}"
        assert took < 10, f"stop took {took:.1f} s: SIGKILL, not a drain"
        assert "drain summary" in out, out
    finally:
        podman("rm", "--force", name, check=False)
