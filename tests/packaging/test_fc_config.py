"""s.yaml against the fc3 component's schema, and against what the binary really does: the port,
the concurrency and timeout it runs with, the health check path and the lifecycle hook paths.

The schema is not part of the project: FC3_SCHEMA points at it (.ci/run sets it), default
../shared/fc3/schema.json beside the checkout.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO, free_port, http, wait_until

FC3_SCHEMA = Path(os.environ.get("FC3_SCHEMA", REPO.parent / "shared" / "fc3" / "schema.json"))


def resolve_vars(node, variables):
    """Replaces `${vars.NAME}` as Serverless Devs does before the component sees its props."""
    if isinstance(node, dict):
        return {k: resolve_vars(v, variables) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_vars(v, variables) for v in node]
    if isinstance(node, str):
        whole = re.fullmatch(r"\$\{vars\.(\w+)\}", node)
        if whole:
            return variables[whole.group(1)]
        return re.sub(r"\$\{vars\.(\w+)\}", lambda m: str(variables[m.group(1)]), node)
    return node


@pytest.fixture(scope="module")
def s_yaml():
    raw = yaml.safe_load((REPO / "s.yaml").read_text())
    return resolve_vars(raw, raw.get("vars", {}))


@pytest.fixture(scope="module")
def function(s_yaml):
    fc3 = [r for r in s_yaml["resources"].values() if r["component"] == "fc3"]
    assert len(fc3) == 1, "one fc3 function"
    return fc3[0]["props"]


def test_every_fc3_resource_matches_the_schema(s_yaml):
    if not FC3_SCHEMA.is_file():
        pytest.fail(f"fc3 schema not found at {FC3_SCHEMA}: set FC3_SCHEMA")
    schema = json.loads(FC3_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    checked = 0
    for name, resource in s_yaml["resources"].items():
        if resource["component"] != "fc3":
            continue
        errors = [
            f"{name}.props.{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(resource["props"])
        ]
        assert not errors, "\n".join(errors)
        checked += 1
    assert checked == 1


def test_the_function_is_a_custom_runtime_grpc_function(function):
    assert function["runtime"] == "custom.debian10"
    assert function["code"] == "./dist/bootstrap.zip"
    assert function["customRuntimeConfig"]["command"] == ["./bootstrap"]
    http_triggers = [t for t in function["triggers"] if t["triggerType"] == "http"]
    assert http_triggers and "POST" in http_triggers[0]["triggerConfig"]["methods"]


def test_the_custom_domain_sends_every_path_to_the_function(s_yaml, function):
    domains = [r["props"] for r in s_yaml["resources"].values() if r["component"] == "fc3-domain"]
    assert len(domains) == 1
    domain = domains[0]
    assert "HTTPS" in domain["protocol"].split(","), "gRPC clients reach FC over TLS"
    routes = domain["routeConfig"]["routes"]
    assert [r["path"] for r in routes] == ["/*"]
    assert routes[0]["functionName"] == function["functionName"]
    assert "POST" in routes[0]["methods"]


def test_env_and_fc_settings_agree(function):
    env = function["environmentVariables"]
    assert int(env["BOOTSTRAP_CONCURRENCY"]) == function["instanceConcurrency"]
    assert env["BOOTSTRAP_TIMEOUT"] == f"{function['timeout']}s"
    # The initializer hook is configured, so the bootstrap must wait for it.
    assert function["instanceLifecycleConfig"]["initializer"]["handler"]
    assert env["BOOTSTRAP_INIT_ON"] == "hook"


def test_the_binary_behaves_as_s_yaml_says(function, bootstrap_process):
    """Starts the static bootstrap the way FC would: the s.yaml's environment, the port in
    FC_CUSTOM_LISTEN_PORT, FC's own variables; then plays FC's part."""
    runtime = function["customRuntimeConfig"]
    assert runtime["port"] == 8089, "the bootstrap's default port, and FC's gRPC guides'"
    port = free_port()
    env = dict(function["environmentVariables"])
    env.update(
        FC_CUSTOM_LISTEN_PORT=str(port),
        FC_FUNCTION_NAME="bootstrap-grpc",
        BOOTSTRAP_LOG_FORMAT="json",
    )
    b = bootstrap_process(env=env, port=port)

    started = wait_until(
        "the start-up line",
        lambda: next(
            (json.loads(line) for line in b.log().splitlines() if "bootstrap listening" in line),
            None,
        ),
    )
    text = json.dumps(started)
    assert f'"concurrency": {function["instanceConcurrency"]}' in text, text
    assert f'"timeout": "{function["timeout"]}s"' in text, text

    health = runtime["healthCheckConfig"]["httpGetUrl"]
    status, _ = http("GET", b.url(health))
    assert status == 503, "not ready before FC's Initializer hook"
    status, body = http("POST", b.url("/initialize"))
    assert status == 200, body
    status, _ = http("GET", b.url(health))
    assert 200 <= status < 400, "FC counts 200-399 as healthy"
    probe = subprocess.run(
        [b.proc.args[0], "probe", "--addr", f"127.0.0.1:{port}"], capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr

    assert "FC Initialize Start RequestId" in b.log()
    status, body = http("GET", b.url("/pre-stop"), timeout=20)
    assert status == 200, body
    assert b.wait() == 0, b.log()
    assert "drain summary" in b.log()
