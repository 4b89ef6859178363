"""deploy/: what can be checked without a Docker engine, systemd as PID 1 or a cluster.

docker-compose config (Debian's v1, no engine), systemd-analyze verify, kubernetes-validate
--strict (offline schemas), promtool and amtool, the Dockerfile's structure and its
HEALTHCHECK command run for real, and the API key read the way each deployment gives it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers import API_KEY, SYSTEM_TOOLS, free_port, require_tool, run_cli
from .running import wait_until_up

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
SYSTEMD_UNIT = DEPLOY / "systemd" / "smsp-exporter.service"
KUBERNETES = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus" / "rules"
CORE_MANIFESTS = ["configmap.yaml", "deployment.yaml", "secret.example.yaml", "service.yaml"]


def run(*cmd: str, **kwargs) -> subprocess.CompletedProcess[str]:
    program = require_tool(cmd[0]) if cmd[0] in SYSTEM_TOOLS else cmd[0]
    return subprocess.run((program, *cmd[1:]), capture_output=True, text=True, timeout=60, **kwargs)


# --- Docker ------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2 and " AS " in froms[0].upper()
    assert "slim" in froms[-1]
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(word == "HEALTHCHECK" and "SMSP_HEALTHCHECK_URL" in rest for word, rest in final)
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert re.search(r"SMSP_HEALTHCHECK_URL=http://127\.0\.0\.1:9847/healthz\b", env)
    assert final[-1][0] == "CMD" and "9847" in final[-1][1]
    # No secret baked in: no ARG or ENV carries a key, only the path of the key file.
    for word, rest in steps:
        if word in ("ARG", "ENV"):
            assert not re.search(r"SMSP_API_KEY(?!_FILE)|PASSWORD|TOKEN", rest), rest
    # Copied files exist in the build context (the repository root).
    for word, rest in steps:
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source


def healthcheck_command() -> list[str]:
    rest = next(rest for word, rest in dockerfile_instructions() if word == "HEALTHCHECK")
    return json.loads(rest[rest.index("CMD") + 3 :].strip())


def test_the_healthcheck_command_really_probes_healthz(tmp_path):
    command = healthcheck_command()
    assert command[0] == "python"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsp_exporter", "--demo", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", proc)
        for path, expected in (("/healthz", 0), ("/no-such-page", 1)):
            env = {**os.environ, "SMSP_HEALTHCHECK_URL": f"http://127.0.0.1:{port}{path}"}
            result = run(sys.executable, *command[1:], env=env)
            assert (result.returncode != 0) == bool(expected), result.stderr
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def compose() -> dict:
    result = run("docker-compose", "-f", str(DOCKER / "docker-compose.yml"), "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_stack_is_valid_and_complete(compose):
    services = compose["services"]
    assert set(services) >= {"exporter", "prometheus", "alertmanager", "grafana"}
    exporter = services["exporter"]
    assert "--demo" in exporter["command"]  # runs without an account
    assert exporter["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert exporter["read_only"] is True
    assert [s["source"] for s in exporter["secrets"]] == ["smsp_api_key"]
    assert Path(compose["secrets"]["smsp_api_key"]["file"]).is_file()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.get("source", "") if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: {source}"
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else port.get("host_ip", "")
            assert "127.0.0.1" in str(published), f"{name} is published beyond loopback"


def test_compose_prometheus_config_passes_promtool_with_the_rules(tmp_path):
    text = (DOCKER / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/*.yml" in text
    local = tmp_path / "prometheus.yml"
    local.write_text(text.replace("/etc/prometheus/rules/", f"{RULES}/"))
    result = run("promtool", "check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = len(list(RULES.glob("*.yml")))
    assert f"SUCCESS: {rule_files} rule files found" in result.stdout, result.stdout


def test_docker_secret_file_is_read_as_the_key(tmp_path):
    secret = tmp_path / "run-secrets" / "smsp_api_key"
    secret.parent.mkdir()
    secret.write_text(API_KEY + "\n")
    config = tmp_path / "config.yaml"
    config.write_text("tags: [promo]\n")
    image_env = dict(
        re.findall(r"(\w+)=(\S+)", " ".join(r for w, r in dockerfile_instructions() if w == "ENV"))
    )
    assert image_env["SMSP_API_KEY_FILE"] == "/run/secrets/smsp_api_key"
    result = run_cli(
        "--config.file", str(config), "--config.check", env={"SMSP_API_KEY_FILE": str(secret)}
    )
    assert result.returncode == 0, result.stderr


# --- systemd -----------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in SYSTEMD_UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart's program exists: point it at this environment's.
    program = Path(sys.executable).parent / "smsp-exporter"
    assert program.exists()
    unit = tmp_path / "smsp-exporter.service"
    unit.write_text(
        SYSTEMD_UNIT.read_text().replace("/opt/smsp-exporter/bin/smsp-exporter", str(program))
    )
    result = run("systemd-analyze", "verify", str(unit))
    assert result.returncode == 0, result.stderr
    # verify only warns about unknown keys and bad values: any output is a failure.
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_systemd_unit_is_hardened():
    settings = unit_settings()
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings.get(key) == [value], key
    assert not any("SMSP_API_KEY=" in v for v in settings.get("Environment", []))
    assert "api-key" not in " ".join(settings["ExecStart"]).lower()
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


PROCESS_METRICS = """
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector
registry = CollectorRegistry()
ProcessCollector(registry=registry)
print(generate_latest(registry).decode())
"""


def test_systemd_unit_leaves_the_process_metrics_readable():
    """The process_* metrics read /proc/self/* and /proc/stat (boot time): without the latter
    the collector exports nothing, and ProcSubset=pid hides it. Mount /proc the way the unit
    asks (in a private mount namespace) and collect; where that is not allowed, check the
    setting itself."""
    settings = unit_settings()
    subset = settings.get("ProcSubset", ["all"])[-1]
    options = [f"subset={subset}"] if subset == "pid" else []
    if "ProtectProc" in settings:
        options.append(f"hidepid={settings['ProtectProc'][-1]}")
    mount = f"mount -t proc -o {','.join(options) or 'defaults'} proc /proc"
    result = run(
        "unshare",
        "--mount",
        "--propagation=private",
        "sh",
        "-c",
        f'{mount} && exec "$0" -c "$1"',
        sys.executable,
        PROCESS_METRICS,
    )
    if result.returncode != 0 and "process_" not in result.stdout:  # not allowed here
        assert subset != "pid", "ProcSubset=pid hides /proc/stat: no process_* metrics"
        return
    assert "process_cpu_seconds_total" in result.stdout, result.stdout + result.stderr
    assert "process_start_time_seconds" in result.stdout


def test_systemd_credential_is_where_the_exporter_reads_the_key(tmp_path):
    """LoadCredential=NAME:PATH puts the key at $CREDENTIALS_DIRECTORY/NAME; the unit's
    Environment= points SMSP_API_KEY_FILE there through %d, which systemd expands to that
    directory. Do what systemd does, then start the exporter that way."""
    settings = unit_settings()
    (credential,) = settings["LoadCredential"]
    name = credential.split(":", 1)[0]
    env_lines = [shlex.split(v)[0] for v in settings["Environment"]]
    key_file = dict(line.split("=", 1) for line in env_lines)["SMSP_API_KEY_FILE"]
    assert key_file == f"%d/{name}"
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / name).write_text(API_KEY)
    config = tmp_path / "config.yaml"
    config.write_text("tags: [promo]\n")
    result = run_cli(
        "--config.file",
        str(config),
        "--config.check",
        env={
            "CREDENTIALS_DIRECTORY": str(credentials),
            "SMSP_API_KEY_FILE": key_file.replace("%d", str(credentials)),
        },
    )
    assert result.returncode == 0, result.stderr
    assert API_KEY not in result.stdout + result.stderr


# --- Kubernetes --------------------------------------------------------------------------------


def test_core_manifests_pass_kubernetes_validate_strict():
    paths = [str(KUBERNETES / name) for name in CORE_MANIFESTS]
    result = run(str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(paths), result.stdout


def test_kubernetes_validate_strict_does_reject_an_unknown_field(tmp_path):
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = run(str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", str(path))
    assert result.returncode != 0


def test_deployment_is_locked_down():
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"requests", "limits"} <= set(container["resources"])
    env = {item["name"]: item for item in container["env"]}
    assert "SMSP_API_KEY" not in env  # the key comes from the mounted Secret, as a file
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secret_name = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())["metadata"][
        "name"
    ]
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName"))
    assert volume["secret"]["secretName"] == secret_name
    assert env["SMSP_API_KEY_FILE"]["value"].startswith(mounts[volume["name"]] + "/")
    key_name = env["SMSP_API_KEY_FILE"]["value"].rsplit("/", 1)[1]
    assert (
        key_name in yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())["stringData"]
    )


def test_the_configmap_config_is_valid(tmp_path):
    configmap = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    result = run_cli("--config.file", str(path), "--config.check", env={"SMSP_API_KEY": API_KEY})
    assert result.returncode == 0, result.stderr


def test_servicemonitor_targets_the_service_port():
    monitor = yaml.safe_load((KUBERNETES / "servicemonitor.yaml").read_text())
    service = yaml.safe_load((KUBERNETES / "service.yaml").read_text())
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= ports


def test_prometheusrule_is_generated_from_the_rule_files(tmp_path):
    generator = KUBERNETES / "generate.py"
    result = run(sys.executable, str(generator), "--check")
    assert result.returncode == 0, result.stderr
    resource = yaml.safe_load((KUBERNETES / "prometheusrule.yaml").read_text())
    groups = []
    for path in sorted(RULES.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    assert groups and resource["spec"]["groups"] == groups
    # The groups pass promtool as they stand in the PrometheusRule.
    extracted = tmp_path / "from-prometheusrule.yml"
    extracted.write_text(yaml.safe_dump({"groups": resource["spec"]["groups"]}))
    check = run("promtool", "check", "rules", str(extracted))
    assert check.returncode == 0, check.stdout + check.stderr


def test_generator_check_notices_a_stale_file(tmp_path):
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy)
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    stale = copy / "prometheusrule.yaml"
    stale.write_text(stale.read_text().replace("groups:", "groups: []\n  old:", 1))
    assert run(sys.executable, str(copy / "generate.py"), "--check").returncode == 1
    assert run(sys.executable, str(copy / "generate.py")).returncode == 0
    assert run(sys.executable, str(copy / "generate.py"), "--check").returncode == 0
