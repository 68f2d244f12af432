"""The deployment files in deploy/ parse, agree with each other, and only run real commands.

What an operator relies on: the unit, the image, the compose file and the Kubernetes manifests
start ``durably-sched`` with flags this version accepts, give the graceful stop enough time
before the platform's SIGKILL, and point their health probes at the port ``serve`` listens on.

Every ``durably-sched ...`` command line in these files is resolved against the real click CLI
(``durably_sched.cli.main``) with ``make_context``, which parses and type-checks the options
without running anything. A flag that this version does not know fails the test.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD_UNIT = DEPLOY / "systemd" / "durably-sched.service"
SYSTEMD_ONCE = DEPLOY / "systemd" / "durably-sched-once.service"
SYSTEMD_TIMER = DEPLOY / "systemd" / "durably-sched-once.timer"
SYSTEMD_ENV_EXAMPLE = DEPLOY / "systemd" / "env.example"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
COMPOSE = DEPLOY / "container" / "compose.yaml"
K8S = DEPLOY / "kubernetes"
K8S_CRONJOB = K8S / "cronjob.yaml"
README = DEPLOY / "README.md"

PROGRAM = "durably-sched"
DEFAULT_STOP_GRACE = 25.0  # serve --stop-grace default, in seconds
IMAGE_NAME = "durably-sched"  # the image name the k8s manifests use (kustomize rewrites it)


# --------------------------------------------------------------------------------------------
# Resolving a command line against the real CLI
# --------------------------------------------------------------------------------------------


def _remaining_args(ctx: Any) -> list[str]:
    """Arguments a group context left for its subcommand (click 8.1 and 8.2+ name them differently)."""
    protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
    return [*protected, *ctx.args]


def resolve_cli(argv: list[str] | tuple[str, ...], env: Mapping[str, str] | None = None) -> list[str]:
    """Parse ``argv`` as the real CLI would, without running it; return the command path.

    ``["durably-sched", "schedules", "validate", "x.yaml"]`` gives ``["schedules", "validate"]``.
    Raises :class:`click.UsageError` (``NoSuchOption``, ``BadParameter``, ``NoSuchCommand``, ...)
    when the line is not a valid invocation. Option values are type-checked, including values
    that come from ``env`` (the ``DURABLY_*`` variables the deploy file sets); ``DURABLY_*``
    variables of the test process itself are hidden. Path options do not have to exist here:
    they name files on the target machine.
    """
    import click

    try:
        from durably_sched.cli import main
    except ImportError as exc:  # the CLI is written in parallel with these files
        pytest.fail(f"durably_sched.cli.main is not importable yet: {exc}")
    assert isinstance(main, click.Group), "durably_sched.cli.main should be a click Group"

    argv = list(argv)
    assert argv and Path(argv[0]).name == PROGRAM, f"not a {PROGRAM} command: {argv!r}"

    original_convert = click.Path.convert

    def convert_without_exists(self: click.Path, value: Any, param: Any, ctx: Any) -> Any:
        saved, self.exists = self.exists, False
        try:
            return original_convert(self, value, param, ctx)
        finally:
            self.exists = saved

    environ = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    environ.update(env or {})
    path: list[str] = []
    with (
        mock.patch.dict(os.environ, environ, clear=True),
        mock.patch.object(click.Path, "convert", convert_without_exists),
    ):
        try:
            ctx = main.make_context(PROGRAM, argv[1:], resilient_parsing=False)
            command: click.Command = main
            while isinstance(command, click.Group):
                rest = _remaining_args(ctx)
                if not rest:
                    raise click.UsageError(f"{shlex.join(argv)}: no subcommand", ctx=ctx)
                name, sub, sub_args = command.resolve_command(ctx, rest)
                assert name is not None and sub is not None  # resolve_command raises otherwise
                ctx = sub.make_context(name, sub_args, parent=ctx, resilient_parsing=False)
                path.append(name)
                command = sub
        except click.exceptions.Exit as exc:  # --help, --version, no_args_is_help on click 8.1
            raise click.UsageError(f"{shlex.join(argv)} exits ({exc.exit_code}) instead of running") from None
    return path


def declared_envvars() -> set[str]:
    """Every environment variable a parameter of the CLI (any command) reads."""
    import click

    from durably_sched.cli import main

    found: set[str] = set()

    def visit(command: click.Command, ctx: click.Context) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                found.add(envvar)
            elif envvar:
                found.update(envvar)
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    visit(sub, click.Context(sub, info_name=name, parent=ctx))

    visit(main, click.Context(main, info_name=PROGRAM))
    return found


def option_value(argv: list[str] | tuple[str, ...], flag: str) -> str | None:
    """The value given to ``flag`` (``--flag V`` or ``--flag=V``; the last one wins)."""
    value = None
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(flag + "="):
            value = token.split("=", 1)[1]
    return value


def stop_grace(argv: list[str] | tuple[str, ...]) -> float:
    value = option_value(argv, "--stop-grace")
    return DEFAULT_STOP_GRACE if value is None else float(value)


def http_port(address: str) -> int:
    """Port of a ``--http``/``DURABLY_HTTP`` value: ``HOST:PORT``, ``:PORT`` or ``PORT``."""
    return int(address.rpartition(":")[2])


def is_program(token: str) -> bool:
    return Path(token).name == PROGRAM


GLOBAL_VALUE_OPTIONS = ("--database", "--jobs", "--schedules")


def subcommand(argv: list[str] | tuple[str, ...]) -> str | None:
    """The first positional word after the program, read from the text alone (no CLI needed).

    Used to tell the ``serve`` and ``migrate`` lines apart in the structural tests, so those run
    even before the CLI exists; whether the line is valid is checked with :func:`resolve_cli`.
    """
    tokens = list(argv[1:])
    while tokens:
        token = tokens.pop(0)
        if token in GLOBAL_VALUE_OPTIONS:
            tokens = tokens[1:]
        elif not token.startswith("-"):
            return token
    return None


# --------------------------------------------------------------------------------------------
# Small parsers for the formats that are not YAML
# --------------------------------------------------------------------------------------------

SYSTEMD_UNITS = {
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def systemd_seconds(value: str) -> float:
    """A systemd time span ("35", "35s", "1min 30s") in seconds."""
    value = value.strip()
    if value == "infinity":
        return float("inf")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and re.fullmatch(r"(\s*\d+(?:\.\d+)?\s*[a-z]*)+", value), f"bad time span {value!r}"
    return sum(float(number) * SYSTEMD_UNITS[unit] for number, unit in parts)


def go_duration_seconds(value: str | int | float) -> float:
    """A compose duration ("35s", "1m30s"; a bare number is seconds) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(float(number) * GO_UNITS[unit] for number, unit in parts)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values in order]}}."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"cannot parse unit line {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_command(value: str) -> list[str]:
    """An Exec*= value as argv: drop systemd's prefixes ("-", "@", "+", "!", ":")."""
    return shlex.split(value.lstrip("-@+!:"))


@dataclass(frozen=True)
class Instruction:
    keyword: str
    rest: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with line continuations joined and comments removed."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    return instructions[last_from:]


def exec_form(rest: str) -> list[str] | None:
    """The argv of a JSON ("exec") form, None for the shell form."""
    if not rest.startswith("["):
        return None
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        tokens = shlex.split(ins.rest)
        if tokens and "=" not in tokens[0]:  # legacy "ENV KEY value"
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            key, _, value = token.partition("=")
            env[key] = value
    return env


def last(instructions: list[Instruction], keyword: str) -> Instruction | None:
    found = [ins for ins in instructions if ins.keyword == keyword]
    return found[-1] if found else None


def healthcheck_command(rest: str) -> list[str]:
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", rest, flags=re.DOTALL)
    assert match, f"HEALTHCHECK without CMD: {rest!r}"
    command = match.group(2).strip()
    argv = exec_form(command)
    return argv if argv is not None else shlex.split(command)


def interpolate(value: str) -> str:
    """Compose-style ${VAR:-default} interpolation, with defaults (or a placeholder) for every variable."""
    value = re.sub(
        r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}",
        lambda m: m.group(3) if m.group(2) in (":-", "-") else "placeholder",
        value,
    )
    return value.replace("$$", "$")


def only_durably(env: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items() if k.startswith("DURABLY_")}


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


# --------------------------------------------------------------------------------------------
# The deploy files, parsed
# --------------------------------------------------------------------------------------------


def unit(path: Path = SYSTEMD_UNIT) -> dict[str, dict[str, list[str]]]:
    return parse_unit(path.read_text(encoding="utf-8"))


def unit_value(section: str, key: str) -> str:
    values = unit().get(section, {}).get(key)
    assert values, f"[{section}] {key}= is not set in {SYSTEMD_UNIT.name}"
    return values[-1]


def unit_env(path: Path = SYSTEMD_UNIT) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit(path).get("Service", {}).get("Environment", []):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            env[key] = val
    return env


def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def image_entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    stage = final_stage(dockerfile())
    entrypoint, cmd = last(stage, "ENTRYPOINT"), last(stage, "CMD")
    assert entrypoint is not None and cmd is not None, "the image needs ENTRYPOINT and CMD"
    ep, args = exec_form(entrypoint.rest), exec_form(cmd.rest)
    assert ep is not None and args is not None, "ENTRYPOINT and CMD must use the exec (JSON) form"
    return ep, args


def compose() -> dict[str, Any]:
    (doc,) = load_yaml_documents(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def compose_services_of_image() -> dict[str, dict[str, Any]]:
    """The compose services that run the image built from deploy/container/Dockerfile."""
    ours = {}
    for name, service in compose()["services"].items():
        build = service.get("build")
        if isinstance(build, dict):
            context = (COMPOSE.parent / build.get("context", ".")).resolve()
            if (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE.resolve():
                ours[name] = service
    return ours


def compose_argv(service: Mapping[str, Any]) -> list[str]:
    entrypoint, cmd = image_entrypoint_and_cmd()
    if "entrypoint" in service:
        ep = service["entrypoint"]
        entrypoint = shlex.split(ep) if isinstance(ep, str) else list(ep)
        cmd = []
    if "command" in service:
        command = service["command"]
        cmd = shlex.split(command) if isinstance(command, str) else list(command)
    return [interpolate(str(token)) for token in [*entrypoint, *cmd]]


def compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = dict(dockerfile_env(final_stage(dockerfile())))
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    env.update({k: interpolate(str(v)) for k, v in raw.items() if v is not None})
    return only_durably(env)


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(doc for doc in load_yaml_documents(path) if isinstance(doc, dict) and "kind" in doc)
    return docs


def k8s_one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in k8s_documents()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/kubernetes, found {len(found)}"
    return found[0]


def k8s_deployment() -> dict[str, Any]:
    return k8s_one("Deployment", "durably-sched")


def k8s_dashboard() -> dict[str, Any]:
    return k8s_one("Deployment", "durably-sched-dashboard")


def k8s_pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = k8s_deployment()["spec"]["template"]["spec"]
    return spec


def k8s_our_containers(kinds: tuple[str, ...] = ("initContainers", "containers")) -> list[dict[str, Any]]:
    pod = k8s_pod_spec()
    return [c for kind in kinds for c in pod.get(kind, []) if c["image"].split(":")[0].endswith(IMAGE_NAME)]


def k8s_argv(container: Mapping[str, Any]) -> list[str]:
    entrypoint, cmd = image_entrypoint_and_cmd()
    if "command" in container:
        entrypoint, cmd = list(container["command"]), []
    if "args" in container:
        cmd = list(container["args"])
    return [str(token) for token in [*entrypoint, *cmd]]


def k8s_cronjob() -> dict[str, Any]:
    (doc,) = [d for d in load_yaml_documents(K8S_CRONJOB) if isinstance(d, dict) and "kind" in d]
    assert doc["kind"] == "CronJob"
    return doc


def k8s_cronjob_pod() -> dict[str, Any]:
    spec: dict[str, Any] = k8s_cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def k8s_secret_example() -> dict[str, Any]:
    return k8s_one("Secret")


def k8s_env(container: Mapping[str, Any]) -> dict[str, str]:
    env = dict(dockerfile_env(final_stage(dockerfile())))
    secret = k8s_secret_example()
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            if ref["name"] == secret["metadata"]["name"]:
                env[item["name"]] = secret.get("stringData", {}).get(ref["key"], "")
    return only_durably(env)


def k8s_serve_container() -> dict[str, Any]:
    serve = [c for c in k8s_our_containers(("containers",)) if subcommand(k8s_argv(c)) == "serve"]
    assert len(serve) == 1, "the Deployment should have exactly one container running `serve`"
    return serve[0]


def readme_commands() -> list[list[str]]:
    """``durably-sched ...`` lines inside fenced code blocks of deploy/README.md."""
    commands = []
    in_block = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = []
        for token in lexer:
            if token in {"&&", "||", ";", "|", "&"}:
                break
            tokens.append(token)
        if tokens and is_program(tokens[0]):
            commands.append(tokens)
    return commands


# --------------------------------------------------------------------------------------------
# Every durably-sched command line in deploy/
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    source: str  # where it was found, used as the test id
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


def collect_invocations() -> list[Invocation]:
    found: list[Invocation] = []

    for label, path in (("systemd", SYSTEMD_UNIT), ("systemd-once", SYSTEMD_ONCE)):
        for key, values in unit(path).get("Service", {}).items():
            if key.startswith("Exec"):
                for value in values:
                    argv = unit_command(value)
                    assert is_program(argv[0]), f"{path.name}: {key}= runs {argv[0]}, not {PROGRAM}"
                    found.append(Invocation(f"{label} {key}", tuple(argv), only_durably(unit_env(path))))

    stage = final_stage(dockerfile())
    image_env = only_durably(dockerfile_env(stage))
    entrypoint, cmd = image_entrypoint_and_cmd()
    found.append(Invocation("Dockerfile ENTRYPOINT+CMD", (*entrypoint, *cmd), image_env))
    healthcheck = last(stage, "HEALTHCHECK")
    assert healthcheck is not None, "the image has no HEALTHCHECK"
    found.append(
        Invocation("Dockerfile HEALTHCHECK", tuple(healthcheck_command(healthcheck.rest)), image_env)
    )

    for name, svc in compose_services_of_image().items():
        found.append(Invocation(f"compose {name}", tuple(compose_argv(svc)), compose_env(svc)))
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
            argv = test[1:] if test[0] == "CMD" else shlex.split(test[1])
            if argv and is_program(argv[0]):
                found.append(Invocation(f"compose {name} healthcheck", tuple(argv), compose_env(svc)))

    for container in k8s_our_containers():
        found.append(Invocation(f"k8s {container['name']}", tuple(k8s_argv(container)), k8s_env(container)))
    for container in k8s_cronjob_pod()["containers"]:
        argv, env = tuple(k8s_argv(container)), k8s_env(container)
        found.append(Invocation(f"k8s cronjob {container['name']}", argv, env))
    for container in k8s_dashboard()["spec"]["template"]["spec"]["containers"]:
        argv, env = tuple(k8s_argv(container)), k8s_env(container)
        found.append(Invocation(f"k8s dashboard {container['name']}", argv, env))

    for i, argv in enumerate(readme_commands()):
        found.append(Invocation(f"README #{i + 1}", tuple(argv)))
    return found


INVOCATIONS = collect_invocations()


def test_every_format_contributes_commands() -> None:
    """Guards the collector itself: if a file's commands stopped being found, nothing would be checked."""
    sources = [inv.source for inv in INVOCATIONS]
    assert sum(s.startswith("systemd ") for s in sources) >= 2  # migrate + serve
    assert sum(s.startswith("systemd-once ") for s in sources) == 1  # serve --once
    assert sum(s.startswith("k8s cronjob ") for s in sources) == 1
    assert sum(s.startswith("Dockerfile ") for s in sources) == 2
    assert sum(s.startswith("compose ") for s in sources) >= 3  # migrate + two serve
    assert sum(s.startswith("k8s ") for s in sources) >= 2  # migrate + serve
    assert any(s.startswith("README ") for s in sources)


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=[inv.source for inv in INVOCATIONS])
def test_command_is_a_valid_invocation(invocation: Invocation) -> None:
    import click

    try:
        path = resolve_cli(invocation.argv, invocation.env)
    except click.UsageError as exc:
        pytest.fail(
            f"{invocation.source}: `{shlex.join(invocation.argv)}` "
            f"(env {dict(invocation.env)}) is rejected by the CLI: {exc.format_message()}"
        )
    # The structural tests below tell commands apart by their first word; it must be the command.
    assert path[0] == subcommand(invocation.argv)


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=[inv.source for inv in INVOCATIONS])
def test_command_with_an_unknown_flag_is_rejected(invocation: Invocation) -> None:
    """The same path through the helper catches a wrong flag: the check above can fail."""
    import click

    with pytest.raises(click.UsageError):
        resolve_cli([*invocation.argv, "--bogus-flag"], invocation.env)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([PROGRAM, "serve", "--bogus"], id="unknown serve flag"),
        pytest.param([PROGRAM, "--bogus", "serve"], id="unknown global flag"),
        pytest.param([PROGRAM, "bogus-command"], id="unknown command"),
        pytest.param([PROGRAM], id="no command"),
        pytest.param([PROGRAM, "serve", "--help"], id="help instead of running"),
        pytest.param([PROGRAM, "serve", "--concurrency", "many"], id="non-integer concurrency"),
        pytest.param([PROGRAM, "serve", "--log-format", "xml"], id="unknown log format"),
        pytest.param([PROGRAM, "migrate", "extra-argument"], id="extra argument"),
    ],
)
def test_helper_rejects_invalid_invocations(argv: list[str]) -> None:
    import click

    with pytest.raises(click.UsageError):
        resolve_cli(argv)


def test_helper_resolves_command_paths() -> None:
    assert resolve_cli([PROGRAM, "serve"]) == ["serve"]
    assert resolve_cli([PROGRAM, "--database", "sqlite:///x.db", "migrate"]) == ["migrate"]
    assert resolve_cli([PROGRAM, "schedules", "validate", "missing.yaml"]) == ["schedules", "validate"]


def test_environment_variables_set_in_deploy_files_are_read_by_the_cli() -> None:
    """A misspelt DURABLY_* variable would be ignored silently; each one must belong to an option."""
    known = declared_envvars()
    used = {name: inv.source for inv in INVOCATIONS for name in inv.env}
    for line in SYSTEMD_ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#?\s*(DURABLY_[A-Z0-9_]+)=", line)
        if match:
            used[match.group(1)] = SYSTEMD_ENV_EXAMPLE.name
    assert used, "no DURABLY_* variables found: the collector is broken"
    unknown = {name: source for name, source in used.items() if name not in known}
    assert not unknown, f"variables no CLI option reads: {unknown} (the CLI reads {sorted(known)})"


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------

YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def test_deploy_has_yaml_files() -> None:
    assert len(YAML_FILES) >= 5


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(DEPLOY)) for p in YAML_FILES])
def test_yaml_file_parses(path: Path) -> None:
    assert load_yaml_documents(path), f"{path} is empty"


# --------------------------------------------------------------------------------------------
# systemd
# --------------------------------------------------------------------------------------------


def test_systemd_runs_serve_after_migrate() -> None:
    service = unit()["Service"]
    assert len(service["ExecStart"]) == 1
    serve = unit_command(service["ExecStart"][0])
    assert subcommand(serve) == "serve"
    assert Path(serve[0]).is_absolute(), "ExecStart should name the virtualenv's console script"
    pre = [unit_command(value) for value in service.get("ExecStartPre", [])]
    assert [subcommand(argv) for argv in pre] == ["migrate"]
    assert pre[0][0] == serve[0], "migrate and serve should come from the same installation"


def test_systemd_runs_unprivileged() -> None:
    service = unit()["Service"]
    dynamic = service.get("DynamicUser", ["no"])[-1] in ("yes", "true", "1", "on")
    user = service.get("User", ["root"])[-1]
    assert dynamic or user not in ("root", "0"), "the service must not run as root"
    assert service.get("NoNewPrivileges", [""])[-1] == "yes"
    assert service.get("CapabilityBoundingSet") == [""], "no capabilities are needed"


def test_systemd_state_and_configuration_paths() -> None:
    assert unit_value("Service", "StateDirectory") == "durably-sched"
    database = unit_env()["DURABLY_DATABASE_URL"]
    assert database.startswith("sqlite:////var/lib/durably-sched/"), database
    assert "-/etc/durably-sched/env" in unit()["Service"]["EnvironmentFile"]
    assert Path(unit_value("Service", "WorkingDirectory")).is_absolute()


def test_systemd_stop_outlasts_the_stop_grace() -> None:
    assert unit_value("Service", "KillSignal") == "SIGTERM"
    assert unit_value("Service", "Restart") == "on-failure"
    serve = unit_command(unit_value("Service", "ExecStart"))
    timeout = systemd_seconds(unit_value("Service", "TimeoutStopSec"))
    assert timeout > stop_grace(serve), f"TimeoutStopSec={timeout}s must exceed --stop-grace"


def test_systemd_http_is_loopback_only() -> None:
    serve = unit_command(unit_value("Service", "ExecStart"))
    address = option_value(serve, "--http")
    assert address is not None, "serve should expose health and metrics (--http)"
    assert address.startswith("127.0.0.1:"), address
    assert http_port(address) == 9464


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictNamespaces", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ],
)
def test_systemd_hardening(key: str, expected: str) -> None:
    assert unit_value("Service", key) == expected


def test_systemd_network_and_syscall_restrictions() -> None:
    service = unit()["Service"]
    families = set(" ".join(service["RestrictAddressFamilies"]).split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "@system-service" in service["SystemCallFilter"]


def _systemd_verify(exe: str, unit_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, "verify", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    true = shutil.which("true")
    assert true is not None

    # First make sure systemd-analyze works at all here, on a unit that is certainly valid.
    control = tmp_path / "control" / "durably-sched-control.service"
    control.parent.mkdir()
    control.write_text(f"[Service]\nType=oneshot\nExecStart={true}\n", encoding="utf-8")
    probe = _systemd_verify(exe, control)
    if probe.returncode != 0 or probe.stdout.strip() or probe.stderr.strip():
        pytest.skip(f"systemd-analyze verify does not work here: {(probe.stderr or probe.stdout).strip()}")

    # The unit's executable is not installed here; point a copy at one that is.
    text = SYSTEMD_UNIT.read_text(encoding="utf-8")
    program = unit_command(unit_value("Service", "ExecStart"))[0]
    copy = tmp_path / "unit" / SYSTEMD_UNIT.name
    copy.parent.mkdir()
    copy.write_text(text.replace(program, true), encoding="utf-8")
    result = _systemd_verify(exe, copy)
    output = "\n".join(
        line
        for line in (result.stdout + result.stderr).splitlines()
        if SYSTEMD_UNIT.name in line or SYSTEMD_UNIT.stem in line
    )
    assert result.returncode == 0 and not output, f"systemd-analyze verify:\n{result.stderr}{result.stdout}"


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    true = shutil.which("true")
    assert true is not None
    program = unit_command(unit_value("Service", "ExecStart"))[0]
    copy = tmp_path / SYSTEMD_UNIT.name
    copy.write_text(SYSTEMD_UNIT.read_text(encoding="utf-8").replace(program, true), encoding="utf-8")
    result = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout + result.stderr)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline does not work here: {result.stderr.strip()}")
    assert float(match.group(1)) <= 2.0, f"hardening regressed:\n{result.stdout}"


def test_env_example_is_key_value_only() -> None:
    for line in SYSTEMD_ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", stripped), f"not KEY=value: {line!r}"


def test_env_example_values_are_accepted() -> None:
    """Each example value, set on its own, is accepted by the command the unit runs."""
    serve = unit_command(unit_value("Service", "ExecStart"))
    examples = re.findall(
        r"^#?\s*(DURABLY_[A-Z0-9_]+)=(\S.*)$",
        SYSTEMD_ENV_EXAMPLE.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert examples
    for name, value in examples:
        assert resolve_cli(serve, {name: value}) == ["serve"], (name, value)


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def test_dockerfile_base_image() -> None:
    instructions = dockerfile()
    args = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.rest:
            key, _, value = ins.rest.partition("=")
            args[key] = value
    bases = [
        re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), ins.rest.split()[0])
        for ins in instructions
        if ins.keyword == "FROM"
    ]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases


def test_dockerfile_runs_as_non_root() -> None:
    user = last(final_stage(dockerfile()), "USER")
    assert user is not None, "the final stage needs a USER"
    name = user.rest.split(":")[0]
    assert name not in ("root", "0", ""), user.rest


def test_dockerfile_stop_signal_and_healthcheck() -> None:
    stage = final_stage(dockerfile())
    stop = last(stage, "STOPSIGNAL")
    assert stop is not None and stop.rest == "SIGTERM"
    healthcheck = last(stage, "HEALTHCHECK")
    assert healthcheck is not None
    argv = healthcheck_command(healthcheck.rest)
    assert is_program(argv[0]) and subcommand(argv) == "healthcheck", argv


def test_dockerfile_serves_by_default_in_exec_form() -> None:
    """Exec form, so SIGTERM reaches durably-sched itself rather than a shell."""
    entrypoint, cmd = image_entrypoint_and_cmd()
    assert is_program(entrypoint[0]) and subcommand([*entrypoint, *cmd]) == "serve"


def test_dockerfile_http_state_and_volume() -> None:
    stage = final_stage(dockerfile())
    env = dockerfile_env(stage)
    assert env["DURABLY_HTTP"] == "0.0.0.0:8080"
    exposed = {
        int(port.split("/")[0]) for ins in stage if ins.keyword == "EXPOSE" for port in ins.rest.split()
    }
    assert http_port(env["DURABLY_HTTP"]) in exposed
    volumes: list[str] = []
    for ins in stage:
        if ins.keyword == "VOLUME":
            volumes.extend(exec_form(ins.rest) or ins.rest.split())
    assert "/var/lib/durably-sched" in volumes
    assert env["DURABLY_DATABASE_URL"] == "sqlite:////var/lib/durably-sched/durably.db"
    workdir = last(stage, "WORKDIR")
    assert workdir is not None and Path(workdir.rest).is_absolute()


def test_dockerfile_copies_the_project_from_the_repository_root() -> None:
    """The build context is the repo root: everything COPY names must exist there."""
    sources: list[str] = []
    for ins in dockerfile():
        if ins.keyword != "COPY" or "--from=" in ins.rest:
            continue
        tokens = [t for t in (exec_form(ins.rest) or shlex.split(ins.rest)) if not t.startswith("--")]
        sources.extend(tokens[:-1])
    for required in ("pyproject.toml", "durably_sched/", "jobs/", "schedules.yaml"):
        assert required in sources, f"the image should contain {required}"
    missing = [src for src in sources if not (ROOT / src).exists()]
    assert not missing, f"COPY sources missing from the repository root: {missing}"


# --------------------------------------------------------------------------------------------
# compose
# --------------------------------------------------------------------------------------------


def _compose_serve_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose_services_of_image().items()
        if subcommand(compose_argv(svc)) == "serve"
    }


def test_compose_builds_from_the_repository_root() -> None:
    services = compose_services_of_image()
    assert services, "no compose service builds deploy/container/Dockerfile"
    for svc in services.values():
        assert (COMPOSE.parent / svc["build"]["context"]).resolve() == ROOT


def test_compose_postgres_has_a_pg_isready_healthcheck() -> None:
    postgres = compose()["services"]["postgres"]
    assert str(postgres["image"]).startswith("postgres")
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (" ".join(test) if isinstance(test, list) else test)


def test_compose_migrate_runs_once_after_postgres_is_healthy() -> None:
    migrate = {
        name: svc
        for name, svc in compose_services_of_image().items()
        if subcommand(compose_argv(svc)) == "migrate"
    }
    assert len(migrate) == 1, "exactly one one-shot migrate service"
    (svc,) = migrate.values()
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert svc.get("restart", "no") == "no"


def test_compose_runs_two_serve_replicas_on_postgres() -> None:
    serve = _compose_serve_services()
    replicas = sum(int((svc.get("deploy") or {}).get("replicas", 1)) for svc in serve.values())
    assert replicas == 2, f"expected two serve replicas, found {replicas}"
    migrate_names = [
        name
        for name, svc in compose_services_of_image().items()
        if subcommand(compose_argv(svc)) == "migrate"
    ]
    for name, svc in serve.items():
        assert compose_env(svc)["DURABLY_DATABASE_URL"].startswith("postgresql://"), name
        depends = svc["depends_on"]
        assert depends[migrate_names[0]]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_compose_stop_grace_period_outlasts_the_stop_grace() -> None:
    for name, svc in _compose_serve_services().items():
        assert "stop_grace_period" in svc, f"{name}: docker's default 10 s would cut the graceful stop short"
        period = go_duration_seconds(svc["stop_grace_period"])
        assert period > stop_grace(compose_argv(svc)), f"{name}: stop_grace_period {period}s"


def test_compose_published_ports_reach_the_http_port() -> None:
    for name, svc in _compose_serve_services().items():
        port = http_port(option_value(compose_argv(svc), "--http") or compose_env(svc)["DURABLY_HTTP"])
        for mapping in svc.get("ports", []):
            assert int(str(mapping).rsplit(":", 1)[1].split("/")[0]) == port, (name, mapping)


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------


def test_kustomization_lists_the_manifests() -> None:
    (kustomization,) = load_yaml_documents(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), f"kustomization lists missing {resource}"
    # Everything except the kustomization, the example Secret (kept out on purpose) and the
    # CronJob (the one-shot alternative to the Deployment, swapped in by hand).
    expected = {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.example.yaml",
        "cronjob.yaml",
        "dashboard.yaml",  # the dashboard in pods of its own, added by hand for many viewers
    }
    assert set(resources) == expected
    assert "secret.example.yaml" not in resources


def test_k8s_deployment_has_two_replicas() -> None:
    deployment = k8s_deployment()
    assert deployment["spec"]["replicas"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_k8s_probes_target_the_http_port() -> None:
    serve = k8s_serve_container()
    address = option_value(k8s_argv(serve), "--http")
    assert address is not None, "serve must be started with --http for the probes"
    assert not address.startswith("127.0.0.1"), "the kubelet cannot reach a loopback-only listener"
    port = http_port(address)
    ports = {p.get("name"): p["containerPort"] for p in serve["ports"]}
    assert port in ports.values(), f"containerPort should be {port}"

    def probe_port(probe: Mapping[str, Any]) -> int:
        value = probe["httpGet"]["port"]
        return int(ports[value]) if isinstance(value, str) else int(value)

    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert serve["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        if kind in serve:
            assert probe_port(serve[kind]) == port, kind


def test_k8s_termination_grace_outlasts_the_stop_grace() -> None:
    grace = k8s_pod_spec()["terminationGracePeriodSeconds"]
    assert grace > stop_grace(k8s_argv(k8s_serve_container()))


def test_k8s_database_url_comes_from_a_secret() -> None:
    secret = k8s_secret_example()
    containers = k8s_our_containers()
    assert containers
    for container in containers:
        (item,) = [e for e in container.get("env", []) if e["name"] == "DURABLY_DATABASE_URL"]
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    assert secret["stringData"]["database-url"].startswith("postgresql://")


def test_k8s_migrates_before_serving() -> None:
    init = [subcommand(k8s_argv(c)) for c in k8s_our_containers(("initContainers",))]
    jobs = [doc for doc in k8s_documents() if doc["kind"] == "Job"]
    assert init == ["migrate"] or jobs, "run migrate in an init container or a Job"


def test_k8s_schedules_come_from_the_configmap(monkeypatch: pytest.MonkeyPatch) -> None:
    serve = k8s_serve_container()
    configmap = k8s_one("ConfigMap")
    # The ConfigMap's schedules.yaml is a valid file for the example jobs the image ships.
    from durably_sched.cli._loader import job_inputs, load_jobs
    from durably_sched.schedule.config import parse_schedules

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    inputs = job_inputs(load_jobs("jobs"))
    config = parse_schedules(configmap["data"]["schedules.yaml"], "configmap.yaml", job_inputs=inputs)
    assert config.schedules, "the ConfigMap should carry at least one schedule"

    volumes = {v["name"]: v for v in k8s_pod_spec()["volumes"]}
    mounts = [
        m
        for m in serve["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == configmap["metadata"]["name"]
    ]
    assert len(mounts) == 1
    env = {e["name"]: e.get("value") for e in serve["env"]}
    assert env["DURABLY_SCHEDULES"] == f"{mounts[0]['mountPath']}/schedules.yaml"


def test_k8s_security_context() -> None:
    pod = k8s_pod_spec()
    for container in k8s_our_containers():
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, container["name"]
        assert context.get("runAsUser", 1) != 0, container["name"]
        assert context.get("readOnlyRootFilesystem") is True, container["name"]
        assert context.get("allowPrivilegeEscalation") is False, container["name"]
        assert container.get("resources", {}).get("requests"), f"{container['name']}: set resources"


def test_k8s_service_targets_the_http_port() -> None:
    service = k8s_one("Service", "durably-sched")
    serve = k8s_serve_container()
    labels = k8s_deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    names = {p.get("name") for p in serve["ports"]} | {p["containerPort"] for p in serve["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in names


@pytest.fixture(autouse=True)
def _no_durably_env_leaks() -> Iterator[None]:
    """resolve_cli patches os.environ; make sure no test leaves DURABLY_* behind."""
    before = {k: v for k, v in os.environ.items() if k.startswith("DURABLY_")}
    yield
    assert {k: v for k, v in os.environ.items() if k.startswith("DURABLY_")} == before


def _http_host(argv: list[str], env: Mapping[str, str]) -> str | None:
    for i, token in enumerate(argv):
        if token == "--http" and i + 1 < len(argv):
            return argv[i + 1].rpartition(":")[0]
        if token.startswith("--http="):
            return token.split("=", 1)[1].rpartition(":")[0]
    value = env.get("DURABLY_HTTP")
    return value.rpartition(":")[0] if value else None


def test_every_serve_listening_beyond_loopback_gets_a_token() -> None:
    """serve refuses a non-loopback --http without a token: each deploy setup that listens on
    0.0.0.0 must hand it one (from a Secret or the environment), or it would not start."""
    setups: list[tuple[str, list[str], dict[str, str], bool]] = []
    container = k8s_serve_container()
    setups.append(("kubernetes", k8s_argv(container), k8s_env(container), False))
    (dashboard,) = k8s_dashboard()["spec"]["template"]["spec"]["containers"]
    setups.append(("kubernetes dashboard", k8s_argv(dashboard), k8s_env(dashboard), False))
    for name, service in compose_services_of_image().items():
        argv = compose_argv(service)
        raw = str((service.get("environment") or {}).get("DURABLY_HTTP_TOKEN", ""))
        if subcommand(argv) == "serve":  # ${VAR:?message}: compose refuses to start without it
            setups.append(
                (f"compose {name}", argv, compose_env(service), raw.startswith("${DURABLY_HTTP_TOKEN:?"))
            )
    assert len(setups) >= 3
    for name, argv, env, required in setups:
        host = _http_host(argv, env)
        if host in (None, "127.0.0.1", "localhost", "[::1]"):
            continue
        token = env.get("DURABLY_HTTP_TOKEN", "")
        given = required or len(token) >= 16 or "--http-token-file" in argv
        assert given, f"{name}: --http {host} without a token"
    item = [e for e in container["env"] if e["name"] == "DURABLY_HTTP_TOKEN"]
    assert item and "secretKeyRef" in item[0]["valueFrom"], "the Kubernetes token must come from a Secret"


# --------------------------------------------------------------------------------------------
# One-shot: the systemd timer + oneshot service, the Kubernetes CronJob
# --------------------------------------------------------------------------------------------

ONCE_SHARED_WITH_SERVICE = ("DynamicUser", "User", "Group", "StateDirectory", "WorkingDirectory")
HARDENING = (
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "RemoveIPC",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "RestrictAddressFamilies",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
)


def once_argv() -> list[str]:
    (start,) = unit(SYSTEMD_ONCE)["Service"]["ExecStart"]
    return unit_command(start)


def test_systemd_once_is_a_oneshot_serve_once_started_by_the_timer_only() -> None:
    service = unit(SYSTEMD_ONCE)["Service"]
    assert service["Type"] == ["oneshot"]
    argv = once_argv()
    assert resolve_cli(argv, unit_env(SYSTEMD_ONCE)) == ["serve"] and "--once" in argv
    assert argv[0] == unit_command(unit_value("Service", "ExecStart"))[0], "the same installation"
    assert service.get("Restart", ["no"])[-1] == "no", "a failed run must not restart the invocation"
    assert "Install" not in unit(SYSTEMD_ONCE), "the timer starts it; enabling the service is a mistake"


def test_systemd_once_timeouts_cover_max_seconds_and_the_stop_grace() -> None:
    service = unit(SYSTEMD_ONCE)["Service"]
    argv = once_argv()
    max_seconds = float(option_value(argv, "--max-seconds") or "inf")
    assert max_seconds < float("inf"), "bound the invocation with --max-seconds"
    # A oneshot's whole run counts against TimeoutStartSec; at it systemd sends SIGTERM.
    assert systemd_seconds(service["TimeoutStartSec"][-1]) > max_seconds + stop_grace(argv)
    assert service["KillSignal"] == ["SIGTERM"]
    assert systemd_seconds(service["TimeoutStopSec"][-1]) > stop_grace(argv)


def test_systemd_once_shares_user_state_and_settings_with_the_service() -> None:
    once, main = unit(SYSTEMD_ONCE)["Service"], unit()["Service"]
    for key in ONCE_SHARED_WITH_SERVICE:
        assert once[key] == main[key], key
    assert once["EnvironmentFile"] == main["EnvironmentFile"]
    assert unit_env(SYSTEMD_ONCE) == unit_env()


def test_systemd_once_is_hardened_like_the_service() -> None:
    once, main = unit(SYSTEMD_ONCE)["Service"], unit()["Service"]
    for key in HARDENING:
        assert key in main, f"{key} is not in {SYSTEMD_UNIT.name}: update HARDENING"
        assert once.get(key) == main[key], key


def _timer_elapses(exe: str, spec: str, count: int) -> list[datetime]:
    result = subprocess.run(
        [exe, "calendar", f"--iterations={count}", spec],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC"},
    )
    assert result.returncode == 0, f"OnCalendar={spec} is not valid: {result.stderr}"
    found = re.findall(
        r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", result.stdout
    )
    return [datetime.fromisoformat(t) for t in found]


def test_systemd_timer_starts_the_once_service_before_it_could_overlap() -> None:
    timer = unit(SYSTEMD_TIMER)
    assert timer["Timer"]["Unit"] == [SYSTEMD_ONCE.name]
    assert timer["Timer"]["Persistent"] == ["true"], "catch up after the machine was off"
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    (spec,) = timer["Timer"]["OnCalendar"]
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    elapses = _timer_elapses(exe, spec, 4)
    assert len(elapses) == 4, f"cannot read the elapse times of OnCalendar={spec}"
    period = min((b - a).total_seconds() for a, b in itertools.pairwise(elapses))
    argv = once_argv()
    assert float(option_value(argv, "--max-seconds") or "inf") + stop_grace(argv) < period


def test_systemd_once_and_timer_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    true = shutil.which("true")
    assert true is not None
    control = tmp_path / "control" / "durably-sched-control.service"
    control.parent.mkdir()
    control.write_text(f"[Service]\nType=oneshot\nExecStart={true}\n", encoding="utf-8")
    probe = _systemd_verify(exe, control)
    if probe.returncode != 0 or probe.stdout.strip() or probe.stderr.strip():
        pytest.skip(f"systemd-analyze verify does not work here: {(probe.stderr or probe.stdout).strip()}")
    folder = tmp_path / "units"
    folder.mkdir()
    program = once_argv()[0]
    for source in (SYSTEMD_ONCE, SYSTEMD_TIMER):
        (folder / source.name).write_text(source.read_text(encoding="utf-8").replace(program, true))
    for name in (SYSTEMD_ONCE.name, SYSTEMD_TIMER.name):
        result = _systemd_verify(exe, folder / name)
        output = "\n".join(
            line for line in (result.stdout + result.stderr).splitlines() if "durably-sched-once" in line
        )
        assert result.returncode == 0 and not output, f"{name}:\n{result.stderr}{result.stdout}"


def test_systemd_once_security_exposure(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    true = shutil.which("true")
    assert true is not None
    copy = tmp_path / SYSTEMD_ONCE.name
    copy.write_text(SYSTEMD_ONCE.read_text(encoding="utf-8").replace(once_argv()[0], true))
    result = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout + result.stderr)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline does not work here: {result.stderr.strip()}")
    assert float(match.group(1)) <= 2.0, f"hardening regressed:\n{result.stdout}"


def test_k8s_cronjob_overlaps_safely_and_reports_a_failure_once() -> None:
    spec = k8s_cronjob()["spec"]
    # Allow: overlapping invocations share the work; fire-time keys and leases keep it exactly-once.
    assert spec["concurrencyPolicy"] == "Allow"
    assert spec.get("startingDeadlineSeconds", 0) > 0
    assert spec.get("suspend", False) is False
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0, "a pod retry would hide the failed run behind a green Job"
    assert k8s_cronjob_pod()["restartPolicy"] == "Never"


def test_k8s_cronjob_runs_serve_once_within_its_deadlines() -> None:
    from durably_sched.schedule.cron import fire_times, parse_cron

    (container,) = k8s_cronjob_pod()["containers"]
    argv = k8s_argv(container)
    assert resolve_cli(argv, k8s_env(container)) == ["serve"] and "--once" in argv
    max_seconds = float(option_value(argv, "--max-seconds") or "inf")
    grace = stop_grace(argv)
    job = k8s_cronjob()["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > max_seconds + grace
    assert k8s_cronjob_pod()["terminationGracePeriodSeconds"] > grace
    # Each invocation ends (at --max-seconds plus the grace) before the next one starts.
    from zoneinfo import ZoneInfo

    spec = parse_cron(k8s_cronjob()["spec"]["schedule"])
    zone = ZoneInfo(k8s_cronjob()["spec"].get("timeZone", "Etc/UTC"))
    start = datetime(2030, 1, 1, tzinfo=zone)
    times = list(fire_times(spec, zone, start, start + timedelta(days=1)))
    period = min((b - a).total_seconds() for a, b in itertools.pairwise(times))
    assert max_seconds + grace < period


def test_k8s_cronjob_uses_the_deployments_image_secret_schedules_and_security() -> None:
    pod = k8s_cronjob_pod()
    (container,) = pod["containers"]
    assert container["image"] == k8s_serve_container()["image"]
    secret = k8s_secret_example()
    (item,) = [e for e in container["env"] if e["name"] == "DURABLY_DATABASE_URL"]
    ref = item["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], "database-url")
    configmap = k8s_one("ConfigMap")
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [
        m
        for m in container["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == configmap["metadata"]["name"]
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DURABLY_SCHEDULES"] == f"{mount['mountPath']}/schedules.yaml"
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert context.get("runAsNonRoot") is True and context.get("runAsUser", 1) != 0
    assert context.get("readOnlyRootFilesystem") is True
    assert context.get("allowPrivilegeEscalation") is False
    assert container.get("resources", {}).get("requests")
    # Its pods are not the Deployment's: the Service and the PodDisruptionBudget never select them.
    labels = k8s_cronjob()["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not k8s_one("Service", "durably-sched")["spec"]["selector"].items() <= labels.items()
    assert not k8s_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_kustomization_can_swap_the_deployment_for_the_cronjob() -> None:
    (kustomization,) = load_yaml_documents(K8S / "kustomization.yaml")
    swapped = [
        r for r in kustomization["resources"] if r not in ("deployment.yaml", "service.yaml", "pdb.yaml")
    ]
    swapped.append("cronjob.yaml")
    kinds = sorted(doc["kind"] for name in swapped for doc in load_yaml_documents(K8S / name))
    assert kinds == ["ConfigMap", "CronJob"]
    assert "cronjob.yaml" in (K8S / "kustomization.yaml").read_text(), "say how to swap it in"


def test_k8s_dashboard_serves_the_web_alone_beside_the_serve_pods_and_never_mixes_with_them() -> None:
    dashboard = k8s_dashboard()
    pod = dashboard["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    argv = k8s_argv(container)
    assert subcommand(argv) == "serve"
    assert {"--no-scheduler", "--no-worker"} <= set(argv), "it must neither fire nor execute"
    address = option_value(argv, "--http")
    assert address is not None and not address.startswith("127.0.0.1")
    port = http_port(address)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    token = [e for e in container["env"] if e["name"] == "DURABLY_HTTP_TOKEN"]
    assert token and "secretKeyRef" in token[0]["valueFrom"]
    assert container["image"] == k8s_serve_container()["image"]
    main_pod = k8s_pod_spec()
    assert pod["securityContext"] == main_pod["securityContext"]
    assert container["securityContext"] == k8s_serve_container()["securityContext"]
    # Neither side's selectors pick the other's pods.
    labels = dashboard["spec"]["template"]["metadata"]["labels"]
    main_labels = k8s_deployment()["spec"]["template"]["metadata"]["labels"]
    for selector in (
        k8s_deployment()["spec"]["selector"]["matchLabels"],
        k8s_one("Service", "durably-sched")["spec"]["selector"],
        k8s_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= labels.items(), selector
    assert not dashboard["spec"]["selector"]["matchLabels"].items() <= main_labels.items()
    service = k8s_one("Service", "durably-sched-dashboard")
    assert service["spec"]["selector"].items() <= labels.items()
    assert not service["spec"]["selector"].items() <= main_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert "dashboard.yaml" in (K8S / "kustomization.yaml").read_text(), "say how to add it"
