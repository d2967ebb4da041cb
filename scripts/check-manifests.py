#!/usr/bin/env python3
"""Checks the Kubernetes manifests offline (run by `make test` through a
Rust test, and alone as `scripts/check-manifests.py KUSTOMIZE VALIDATE`):

1. each kustomization (the base and every overlay) renders with kustomize;
2. everything it renders validates against the Kubernetes OpenAPI schemas
   (kubernetes-validate, strict: unknown fields are errors);
3. every config key each service reads (its built-in defaults, from
   crates/<service>/src/config.rs and the common ones, plus the optional
   telemetry.otlp_endpoint) is settable from the manifests: in the mounted
   sextant.toml (set, or written out in a comment) or as a SEXTANT_*
   variable of the Deployment; the secrets only from a Secret;
4. each service has its Deployment with probes, memory limits and a
   termination grace that covers the preStop pause and the drain, a
   Service that selects it, a PodDisruptionBudget and an autoscaler.

Exits 1 naming every problem."""

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Another tree of manifests (the checker's own tests break a copy).
KUBERNETES = Path(os.environ.get("SEXTANT_MANIFESTS", ROOT / "deploy" / "kubernetes"))
SERVICES = ["gateway", "analytics", "jobs", "exports"]
KUBERNETES_VERSION = "1.31.0"
# Keys with no default: optional, so not in the built-in defaults.
OPTIONAL = {"telemetry.otlp_endpoint"}
SECRET = re.compile(r"^(internal\.secret|gateway\.auth\.jwt_secret|[a-z]+\.database\.url|[a-z]+\.amqp\.url)$")


def defaults(path, name):
    text = path.read_text()
    match = re.search(rf'pub const {name}: &str = r#"(.*?)"#;', text, re.S)
    if not match:
        sys.exit(f"no {name} in {path}")
    return tomllib.loads(match.group(1))


def leaves(table, prefix=""):
    """Dotted keys of a TOML table; an empty table is a key of its own."""
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, dotted + ".")
        else:
            yield dotted


def keys_read(service):
    common = defaults(ROOT / "crates" / "common" / "src" / "config.rs", "COMMON_DEFAULTS")
    own = defaults(ROOT / "crates" / service / "src" / "config.rs", "DEFAULTS")
    return set(leaves(common)) | set(leaves(own)) | OPTIONAL


def commented_keys(text):
    """`# key = value` lines, under their section: documented, settable by
    removing the `#`."""
    section, found = "", set()
    for line in text.splitlines():
        header = re.match(r"^\[([a-z0-9_.]+)\]", line)
        if header:
            section = header.group(1) + "."
            continue
        assignment = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if assignment:
            found.add(section + assignment.group(1))
    return found


def env_key(name):
    return name.removeprefix("SEXTANT_").lower().replace("__", ".")


def render(kustomize, directory):
    result = subprocess.run([kustomize, "build", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        return None, [f"{directory}: kustomize build failed: {result.stderr.strip()}"]
    return result.stdout, []


def validate(validator, name, rendered):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(rendered)
        file.flush()
        result = subprocess.run(
            [validator, "--strict", "--quiet", "-k", KUBERNETES_VERSION, file.name],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        return [f"{name}: {line}" for line in (result.stdout + result.stderr).strip().splitlines()]
    return []


def seconds(duration):
    match = re.fullmatch(r"(\d+)s", duration)
    return int(match.group(1)) if match else None


def check_objects(name, objects):
    problems = []
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    configmaps = by_kind.get("ConfigMap", {})
    for service in SERVICES:
        deployment = by_kind.get("Deployment", {}).get(f"sextant-{service}")
        where = f"{name}: sextant-{service}"
        if deployment is None:
            problems.append(f"{where}: no Deployment")
            continue
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        labels = deployment["spec"]["template"]["metadata"]["labels"]

        # What the pod's configuration can set.
        toml_text = ""
        for volume in pod.get("volumes", []):
            ref = volume.get("configMap", {}).get("name")
            if ref and "sextant.toml" in configmaps.get(ref, {}).get("data", {}):
                toml_text = configmaps[ref]["data"]["sextant.toml"]
        env = {e["name"]: e for e in container.get("env", [])}
        from_secret = {n for n, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
        if env.get("SEXTANT_CONFIG", {}).get("value") != "/etc/sextant/sextant.toml" or not toml_text:
            problems.append(f"{where}: sextant.toml is not mounted at SEXTANT_CONFIG")
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef", {}).get("name")
            if ref:
                env.update({k: {} for k in configmaps.get(ref, {}).get("data", {})})
        in_file = set(leaves(tomllib.loads(toml_text))) if toml_text else set()
        settable = in_file | commented_keys(toml_text) | {env_key(n) for n in env if n.startswith("SEXTANT_")}
        for key in sorted(keys_read(service)):
            if key not in settable:
                problems.append(f"{where}: config key {key} is not settable from the manifests")
            if SECRET.match(key):
                if key in in_file:
                    problems.append(f"{where}: secret {key} is in the ConfigMap")
                if "SEXTANT_" + key.upper().replace(".", "__") not in from_secret:
                    problems.append(f"{where}: secret {key} does not come from a Secret")

        # Probes, resources, termination.
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                problems.append(f"{where}: no {probe}")
        resources = container.get("resources", {})
        for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
            for key in keys:
                value = str(resources.get(part, {}).get(key, ""))
                if not re.fullmatch(r"\d+(m|Mi|Gi)?", value):
                    problems.append(f"{where}: resources.{part}.{key} is {value!r}")
        section = "gateway.http" if service == "gateway" else f"{service}.grpc"
        grace = tomllib.loads(toml_text or "").get(section.split(".")[0], {}).get(section.split(".")[1], {})
        drain = seconds(grace.get("shutdown_grace", "")) or 0
        pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        total = pod.get("terminationGracePeriodSeconds", 30)
        if total < pause + drain + 1:
            problems.append(
                f"{where}: terminationGracePeriodSeconds {total} < preStop {pause} s + {section}.shutdown_grace {drain} s"
            )

        # Service, disruption budget, autoscaler.
        services = [
            s
            for s in by_kind.get("Service", {}).values()
            if s["spec"].get("selector") and s["spec"]["selector"].items() <= labels.items()
        ]
        if not services:
            problems.append(f"{where}: no Service selects it")
        if f"sextant-{service}" not in by_kind.get("PodDisruptionBudget", {}):
            problems.append(f"{where}: no PodDisruptionBudget")
        hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(f"sextant-{service}")
        if hpa is None or hpa["spec"]["scaleTargetRef"]["name"] != f"sextant-{service}":
            problems.append(f"{where}: no HorizontalPodAutoscaler")
    return problems


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check-manifests.py KUSTOMIZE KUBERNETES_VALIDATE")
    kustomize, validator = sys.argv[1], sys.argv[2]
    directories = [KUBERNETES / "base"] + sorted(p for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
    problems, checked = [], 0
    for directory in directories:
        name = str(directory.relative_to(KUBERNETES))
        rendered, found = render(kustomize, directory)
        problems += found
        if rendered is None:
            continue
        objects = [o for o in yaml.safe_load_all(rendered) if o]
        checked += len(objects)
        problems += validate(validator, name, rendered)
        problems += check_objects(name, objects)
    for problem in problems:
        print(problem)
    print(f"{len(directories)} kustomizations, {checked} objects, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
