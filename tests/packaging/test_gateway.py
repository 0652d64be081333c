"""Through a real TLS-terminating gRPC gateway, as on FC (TLS on the custom domain, h2c to the
instance) and Cloud Run: nginx with a self-signed certificate in front of the static bootstrap.
The repo's client and Python's grpcio both call every RPC kind through it; a plaintext client
is refused, as FC's gateway refuses it."""

import shutil
import subprocess
import sys

import pytest

from conftest import REPO, Bootstrap, free_port, listening, wait_until

SERVER_NAME = "bootstrap.test"

NGINX_CONF = """
# nginx as the platform's TLS front end: HTTP/2 over TLS in, h2c gRPC out.
worker_processes 1;
pid nginx.pid;
error_log logs/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log logs/access.log;
  client_body_temp_path tmp/body;
  proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;
  server {{
    listen 127.0.0.1:{tls_port} ssl http2;
    ssl_certificate cert.pem;
    ssl_certificate_key key.pem;
    location / {{ grpc_pass grpc://127.0.0.1:{upstream}; }}
  }}
}}
"""


@pytest.fixture(scope="module")
def gateway(static_bin, tmp_path_factory):
    if shutil.which("nginx") is None:
        pytest.fail("nginx is missing: make test-packaging-deps installs it")
    d = tmp_path_factory.mktemp("gateway")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={SERVER_NAME}",
            "-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1",
            "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = Bootstrap(tmp=d)
    tls_port = free_port()
    (d / "logs").mkdir()
    (d / "tmp").mkdir()
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tls_port=tls_port, upstream=server.port))
    nginx = ["nginx", "-c", str(conf), "-p", f"{d}/"]
    started = subprocess.run(nginx, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stderr
        wait_until("nginx to listen", lambda: listening(tls_port))
        yield {"port": tls_port, "ca": d / "cert.pem", "server": server, "dir": d}
    finally:
        subprocess.run(nginx + ["-s", "stop"], capture_output=True)
        server.stop()


def client(static_client, gateway, *args, tls=True):
    cmd = [str(static_client), "--addr", f"127.0.0.1:{gateway['port']}"]
    if tls:
        cmd.append("--insecure")
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "args",
    [
        ["hello", "--name", "gateway"],
        ["health"],
        ["get-feature", "--lat", "473124518", "--lon", "85231907"],
        ["list-features", "--lo-lat", "473000000", "--lo-lon", "85000000",
         "--hi-lat", "474000000", "--hi-lon", "86000000"],
        ["record-route", "--point", "473124518,85231907", "--point", "473000000,85000000"],
        ["route-chat", "--note", "1,1,a", "--note", "1,1,b"],
    ],
    ids=lambda a: a[0],
)  # fmt: skip
def test_client_binary_through_tls_gateway(static_client, gateway, args):
    done = client(static_client, gateway, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip(), "every subcommand prints its answer"


def test_metadata_passes_the_gateway(static_client, gateway):
    # NVCF clients send function-id and authorization; the request id header shows they arrive.
    done = client(
        static_client,
        gateway,
        "-H", "function-id: x",
        "-H", "authorization: Bearer test-key",
        "-H", "x-request-id: through-the-gateway-1",
        "hello",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(
        "the request id in the server's log",
        lambda: "through-the-gateway-1" in gateway["server"].log(),
    )


def test_plaintext_client_is_refused_by_the_tls_port(static_client, gateway):
    done = client(static_client, gateway, "--connect-timeout", "3s", "hello", tls=False)
    assert done.returncode == 1, done.stdout + done.stderr


def test_grpcio_through_tls_gateway(gateway):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "clients" / "stock_client.py"),
            "--addr", f"127.0.0.1:{gateway['port']}",
            "--tls-ca", str(gateway["ca"]),
            "--server-name", SERVER_NAME,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all checks passed" in done.stdout, done.stdout
    assert "SKIP" not in done.stdout, done.stdout
