"""Checks docker-compose.yml beyond the schema: the production shape the README promises, and that every
PREFTRACK_* setting it passes is one the gateway knows (a renamed setting would otherwise be ignored silently).

    .venv/bin/python docker/check_compose.py .venv-compose/bin/docker-compose

Runs the Compose implementation's ``config`` (schema validation and interpolation with .env.example), then reads
the resolved file. Exits non-zero, naming each problem.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import yaml

from preftrack_gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parent.parent


def main(compose: str) -> int:
    resolved = subprocess.run(
        [compose, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
         "--env-file", str(ROOT / ".env.example"), "config"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if resolved.returncode != 0:
        print(f"docker-compose config failed:\n{resolved.stderr}", file=sys.stderr)
        return 1
    config = yaml.safe_load(resolved.stdout)
    services = config["services"]
    problems: list[str] = []

    def need(condition: bool, problem: str) -> None:
        if not condition:
            problems.append(problem)

    need(set(services) >= {"postgres", "triton", "gateway", "trainer", "prometheus"}, "a service is missing")
    devices = services["triton"].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    need(any("gpu" in d.get("capabilities", []) for d in devices), "triton reserves no GPU")
    need(services["gateway"].get("deploy", {}).get("replicas", 1) >= 2, "the gateway runs fewer than 2 replicas")
    need("pgdata" in config.get("volumes", {}), "PostgreSQL's data is not on a volume")
    for name in ("postgres", "triton"):
        need("healthcheck" in services[name], f"{name} has no health check")
    gateway_waits = services["gateway"].get("depends_on", {})
    need(
        all(gateway_waits.get(s, {}).get("condition") == "service_healthy" for s in ("postgres", "triton")),
        "the gateway does not wait for a healthy PostgreSQL and Triton",
    )
    need("HEALTHCHECK" in (ROOT / "docker/gateway.Dockerfile").read_text(), "the gateway image has no health check")
    environment = services["gateway"].get("environment", {})
    need("PREFTRACK_PSEUDONYM_KEY" not in environment, "the pseudonym key must come from a secret file")
    need(
        "pseudonym_key"
        in [s if isinstance(s, str) else s.get("source") for s in services["gateway"].get("secrets", [])],
        "the gateway gets no pseudonym_key secret",
    )
    # PGPASSWORD: PostgreSQL's client library reads the store's password from it.
    known = {f"PREFTRACK_{f.name.upper()}" for f in dataclasses.fields(GatewayConfig)} | {
        "PREFTRACK_PSEUDONYM_KEY_FILE",
        "PGPASSWORD",
    }
    for variable in sorted(set(environment) - known):
        problems.append(f"gateway: {variable} is not a gateway setting")
    try:
        GatewayConfig.from_env(
            {k: str(v) for k, v in environment.items() if k != "PREFTRACK_PSEUDONYM_KEY_FILE"},
            pseudonym_key="x" * 32,
        )
    except ValueError as exc:
        problems.append(f"gateway: its settings are refused: {exc}")
    prometheus = (ROOT / "docker/prometheus.yml").read_text()
    need("gateway" in prometheus and "triton:8002" in prometheus, "Prometheus does not scrape the gateway and Triton")
    for problem in problems:
        print(f"docker-compose.yml: {problem}", file=sys.stderr)
    if not problems:
        print(f"docker-compose.yml: valid ({len(services)} services, checked against the gateway's settings)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".venv-compose/bin/docker-compose"))
