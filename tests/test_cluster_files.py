"""The cluster files parse, install the versions `pyproject.toml` pins, run only commands the CLI
has, start Ray with token authentication and keep the dashboard off public addresses."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dfu_train.cli import app

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER = ("aws.yaml", "gcp.yaml")
KUBERAY = ("raycluster.yaml", "rayjob.yaml")


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        match = re.fullmatch(r"([a-z]+)(?:\[[^\]]*\])?==([\d.]+)", dep)
        if match:
            pins[match.group(1)] = match.group(2)
    assert set(pins) == {"torch", "torchvision", "ray"}
    return pins


@pytest.mark.parametrize("name", LAUNCHER + KUBERAY)
def test_every_cluster_file_parses(name):
    assert isinstance(yaml.safe_load((CLUSTER / name).read_text()), dict)


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_files_install_the_pinned_versions_and_use_tokens(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    setup = " ".join(config["setup_commands"])
    for package, version in _pins().items():
        assert re.search(rf'"{package}(\[[^\]]*\])?=={re.escape(version)}"', setup), package
    assert "pip install --quiet -e ~/dfu_train" in setup
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in (c for c in starts if "ray start" in c):
        assert command.startswith("RAY_AUTH_MODE=token ray start"), command
    head = next(c for c in config["head_start_ray_commands"] if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head
    assert config["available_node_types"]["head"]["resources"]["CPU"] == 0  # no trials there


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_files_use_the_pinned_ray_and_tokens(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    spec = config["spec"].get("rayClusterSpec", config["spec"])
    assert spec["rayVersion"] == _pins()["ray"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def _dfu_commands(text: str) -> list[list[str]]:
    return [m.split()[:3] for m in re.findall(r"\bdfu [a-z]+(?: [a-z]+)?", text)]


@pytest.mark.parametrize("name", [*LAUNCHER, *KUBERAY, "local.sh", "README.md"])
def test_the_dfu_commands_the_cluster_files_run_exist(name):
    for command in _dfu_commands((CLUSTER / name).read_text()):
        result = CliRunner().invoke(app, [*command[1:], "--help"])
        if result.exit_code != 0 and len(command) == 3:  # the third word was an argument
            result = CliRunner().invoke(app, [command[1], "--help"])
        assert result.exit_code == 0, (name, command, result.output)


def test_local_sh_is_valid_bash_with_tokens_and_stops_only_its_own_processes():
    script = CLUSTER / "local.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "RAY_AUTH_MODE=token" in text and "--include-dashboard=false" in text
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\bray stop\b|\bpkill\b|\bkillall\b", code)
