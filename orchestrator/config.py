"""The supervisor's config model (``configs/process_supervisor.yaml``) and its resolution.

Loading goes: read YAML -> validate ``defaults`` -> merge defaults into each
service -> expand ``${VAR:-default}`` and ``{python}``/``{root}``/``{var}``/
``{metrics_port}`` -> validate with pydantic (unknown keys forbidden) -> check
the dependency graph (unknown names, cycles) -> a :class:`StackPlan`.
Every problem is a one-line :class:`ConfigError`: ``file: key.path: problem``.
"""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from core.config import StrictModel, format_validation_error, read_structured
from core.errors import ConfigError
from core.settings import PROJECT_ROOT, child_environment
from orchestrator.control import default_var_dir
from orchestrator.interpolate import InterpolationError, expand_tree

Mode = Literal["paper", "dry", "live"]
MODES: tuple[Mode, ...] = ("paper", "dry", "live")
ServiceName = str
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
EnvValue = str | int | float | bool


class RestartSpec(StrictModel):
    """When and how fast a service that exited is started again."""

    policy: Literal["always", "on-failure", "never"] = Field(
        default="on-failure", description="always: any exit; on-failure: non-zero exit or signal; never")
    backoff_initial: float = Field(default=1.0, gt=0, description="first restart delay, seconds")
    backoff_multiplier: float = Field(default=2.0, ge=1.0, description="delay factor per consecutive failure")
    backoff_max: float = Field(default=60.0, gt=0, description="delay cap, seconds")
    max_restarts: int = Field(default=5, ge=0, description="restarts allowed within `window` before 'failed'")
    window: float = Field(default=300.0, gt=0, description="sliding window for max_restarts, seconds")
    stable_after: float = Field(default=30.0, ge=0, description="a run this long resets the backoff")
    fatal_exit_codes: tuple[int, ...] = Field(
        default=(2, 3), description="exit codes that mark the service failed at once (2 config, 3 fatal)")

    @model_validator(mode="after")
    def _cap_not_below_initial(self) -> RestartSpec:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        return self


class LogSpec(StrictModel):
    """Per-service log file rotation (``var/log/<name>.log``)."""

    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="rotate when the file exceeds this")
    backups: int = Field(default=5, ge=0, le=100, description="rotated files kept: <name>.log.1 .. .N")


class ReadinessSpec(StrictModel):
    """How the supervisor decides a started service is ready. Exactly one of tcp/http/command."""

    tcp: str | None = Field(default=None, description="host:port accepting connections")
    http: str | None = Field(default=None, description="URL answering 2xx to GET")
    command: str | list[str] | None = Field(default=None, description="command exiting 0")
    interval: float = Field(default=0.2, gt=0, description="seconds between attempts")
    timeout: float = Field(default=60.0, gt=0, description="not ready after this many seconds: restart")
    attempt_timeout: float = Field(default=2.0, gt=0, description="seconds one attempt may take")

    @model_validator(mode="after")
    def _exactly_one(self) -> ReadinessSpec:
        given = [k for k in ("tcp", "http", "command") if getattr(self, k) not in (None, "", [])]
        if len(given) != 1:
            raise ValueError("exactly one of tcp, http, command is required")
        return self

    @field_validator("tcp")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port")
        return v

    @field_validator("http")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @property
    def kind(self) -> str:
        """``tcp``, ``http`` or ``command``."""
        return "tcp" if self.tcp else "http" if self.http else "command"

    def describe(self) -> str:
        """Short human text, e.g. ``tcp 127.0.0.1:15432``."""
        target = self.tcp or self.http or _join(self.command or "")
        return f"{self.kind} {target}"


class ServiceSpec(StrictModel):
    """One supervised service as written in the YAML file."""

    cmd: str | list[str] = Field(description="command line (shlex-split if a string); no shell")
    env: dict[str, EnvValue] = Field(default_factory=dict, description="extra environment")
    cwd: str | None = Field(default=None, description="working directory (default: project root)")
    group: str = Field(default="default", min_length=1, description="for `ctl restart GROUP`")
    depends_on: list[str] = Field(default_factory=list, description="start after these are ready")
    readiness: ReadinessSpec | None = Field(default=None, description="no probe: see ready_after")
    ready_after: float = Field(default=1.0, ge=0, description="without a probe: ready once up this long")
    restart: RestartSpec = Field(default_factory=RestartSpec)
    oneshot: bool = Field(default=False, description="runs to completion; ready when it exited 0")
    stop_signal: str = Field(default="SIGTERM", description="signal sent first on stop")
    stop_timeout: float = Field(default=10.0, gt=0, description="seconds before SIGKILL to the group")
    stop_group: bool = Field(default=True, description="send stop_signal to the whole process group")
    modes: list[Mode] = Field(default_factory=lambda: list(MODES), description="TRADING_MODEs it runs in")
    enabled: bool = True
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description="exported as METRICS_PORT")
    url: str | None = Field(default=None, description="for `ctl status` (default: metrics_port/readiness)")
    description: str = ""

    @field_validator("cmd")
    @classmethod
    def _non_empty_cmd(cls, v: str | list[str]) -> str | list[str]:
        argv = shlex.split(v) if isinstance(v, str) else v
        if not argv or not argv[0]:
            raise ValueError("must not be empty")
        return v

    @field_validator("stop_signal")
    @classmethod
    def _signal_name(cls, v: str) -> str:
        name = v.upper() if v.upper().startswith("SIG") else "SIG" + v.upper()
        if name not in signal.Signals.__members__:
            raise ValueError(f"unknown signal {v!r}")
        return name

    @property
    def argv(self) -> list[str]:
        """The command as an argument vector."""
        return shlex.split(self.cmd) if isinstance(self.cmd, str) else list(self.cmd)


class Defaults(StrictModel):
    """Settings merged into every service (a service's own keys win)."""

    restart: RestartSpec = Field(default_factory=RestartSpec)
    stop_timeout: float = Field(default=10.0, gt=0)
    log: LogSpec = Field(default_factory=LogSpec)


class SupervisorFile(StrictModel):
    """The whole ``process_supervisor.yaml``."""

    env: dict[str, EnvValue] = Field(default_factory=dict,
                                     description="env for all children; later keys may use earlier ones")
    defaults: Defaults = Field(default_factory=Defaults)
    services: dict[ServiceName, ServiceSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Service:
    """A resolved service: what the supervisor actually runs."""

    name: str
    spec: ServiceSpec
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    enabled: bool
    url: str
    log: LogSpec
    level: int  # dependency depth: 0 = no dependencies

    @property
    def group(self) -> str:
        """The service's group."""
        return self.spec.group


@dataclass(frozen=True)
class StackPlan:
    """A validated config for one mode: services in dependency (start) order."""

    path: Path
    mode: str
    var_dir: Path
    services: dict[str, Service] = field(default_factory=dict)

    def enabled(self) -> list[Service]:
        """Services that run in this mode."""
        return [s for s in self.services.values() if s.enabled]

    def resolve_target(self, target: str) -> list[str]:
        """A service name, or all services of a group; [] if neither."""
        if target in self.services:
            return [target]
        return [n for n, s in self.services.items() if s.group == target]


def _join(cmd: str | list[str]) -> str:
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


def _env_str(v: EnvValue) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def dependency_levels(deps: Mapping[str, list[str]]) -> dict[str, int]:
    """Depth of each node (0 = no dependencies). Assumes the graph is acyclic and closed."""
    levels: dict[str, int] = {}

    def level(n: str) -> int:
        if n not in levels:
            levels[n] = 1 + max((level(d) for d in deps[n]), default=-1)
        return levels[n]

    for n in deps:
        level(n)
    return levels


def find_cycle(deps: Mapping[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path ``[a, b, a]``, or None. Unknown names are ignored."""
    state: dict[str, int] = {}  # 1 = on stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in deps.get(n, []):
            if d not in deps:
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in deps:
        if n not in state and (found := visit(n)):
            return found
    return None


def check_graph(path: Path, cfg: SupervisorFile) -> None:
    """Unknown dependencies, cycles and contradictory settings, as one-line ConfigErrors."""
    deps = {n: s.depends_on for n, s in cfg.services.items()}
    for name, spec in cfg.services.items():
        if set(name) - _NAME_CHARS:
            raise ConfigError(f"{path}: services.{name}: name may only use letters, digits, '_', '-', '.'")
        for d in spec.depends_on:
            if d not in cfg.services:
                raise ConfigError(f"{path}: services.{name}.depends_on: unknown service {d!r}")
        if spec.oneshot and spec.readiness is not None:
            raise ConfigError(f"{path}: services.{name}.readiness: not used by a oneshot (ready on exit 0)")
        if spec.oneshot and spec.restart.policy == "always":
            raise ConfigError(f"{path}: services.{name}.restart.policy: 'always' is not allowed for oneshot")
    cycle = find_cycle(deps)
    if cycle:
        raise ConfigError(f"{path}: services.{cycle[0]}.depends_on: dependency cycle {' -> '.join(cycle)}")


def _unknown_keys_first(exc: ValidationError) -> ValidationError:
    """Reorder errors so a misspelt key is reported rather than the 'missing' error it causes."""
    errors = exc.errors()
    if not any(e["type"] == "extra_forbidden" for e in errors):
        return exc
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    try:
        details: list[Any] = [{k: e[k] for k in ("type", "loc", "input", "ctx") if k in e} for e in errors]
        return ValidationError.from_exception_data(exc.title, details)
    except (TypeError, ValueError, KeyError):
        return exc


def _merge_defaults(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate ``defaults`` and merge them into each raw service dict."""
    try:
        defaults = Defaults.model_validate(raw.get("defaults") or {})
    except ValidationError as exc:
        msg = format_validation_error(path, _unknown_keys_first(exc))
        msg = msg.replace(f"{path}: ", f"{path}: defaults.", 1)
        raise ConfigError(msg) from None
    services = raw.get("services")
    if not isinstance(services, dict):
        return raw
    merged: dict[str, Any] = {}
    for name, svc in services.items():
        if isinstance(svc, dict):
            svc = dict(svc)
            own_restart = svc.get("restart")
            if own_restart is None or isinstance(own_restart, dict):
                svc["restart"] = {**defaults.restart.model_dump(), **(own_restart or {})}
            svc.setdefault("stop_timeout", defaults.stop_timeout)
        merged[name] = svc
    return {**raw, "services": merged}


def _expand(path: Path, raw: dict[str, Any], env: dict[str, str],
            placeholders: dict[str, str]) -> dict[str, Any]:
    """Expand the top-level env (in order, each visible to the next) and every service."""
    try:
        top_env: dict[str, Any] = {}
        raw_env = raw.get("env")
        for k, v in (raw_env.items() if isinstance(raw_env, dict) else ()):
            top_env[k] = expand_tree(v, env, placeholders, f"env.{k}")
            if isinstance(top_env[k], str | int | float | bool):
                env[k] = _env_str(top_env[k])
        services: dict[str, Any] = {}
        raw_services = raw.get("services")
        if not isinstance(raw_services, dict):
            return raw
        for name, svc in raw_services.items():
            local = dict(placeholders)
            if isinstance(svc, dict) and svc.get("metrics_port") is not None:
                local["metrics_port"] = str(expand_tree(svc["metrics_port"], env, placeholders,
                                                        f"services.{name}.metrics_port"))
            services[name] = expand_tree(svc, env, local, f"services.{name}")
    except InterpolationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    out = {**raw, "services": services}
    if isinstance(raw_env, dict):
        out["env"] = top_env
    return out


def _default_url(spec: ServiceSpec) -> str:
    if spec.url:
        return spec.url
    if spec.metrics_port:
        return f"http://127.0.0.1:{spec.metrics_port}/metrics"
    if spec.readiness and spec.readiness.http:
        return spec.readiness.http
    if spec.readiness and spec.readiness.tcp:
        return f"tcp://{spec.readiness.tcp}"
    return ""


def resolve_mode(mode: str | None, env: Mapping[str, str]) -> str:
    """The trading mode: explicit, else ``TRADING_MODE``, else paper."""
    chosen = (mode or env.get("TRADING_MODE") or "paper").strip().lower()
    if chosen not in MODES:
        raise ConfigError(f"TRADING_MODE: must be one of {', '.join(MODES)} (got {chosen!r})")
    return chosen


def load_supervisor_config(path: str | Path, *, mode: str | None = None, var_dir: Path | None = None,
                           environ: Mapping[str, str] | None = None) -> StackPlan:
    """Load, validate and resolve a supervisor config for ``mode``; raises one-line ConfigError."""
    p = Path(path)
    env = dict(environ if environ is not None else child_environment())
    chosen_mode = resolve_mode(mode, env)
    vdir = (var_dir or default_var_dir(env)).resolve()
    env["TRADING_MODE"] = chosen_mode
    env["TRADESTACK_VAR_DIR"] = str(vdir)
    raw = read_structured(p)
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: <root>: must be a mapping with a 'services' key")
    placeholders = {"python": sys.executable, "root": str(PROJECT_ROOT), "var": str(vdir)}
    raw = _expand(p, _merge_defaults(p, raw), env, placeholders)
    try:
        cfg = SupervisorFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(p, _unknown_keys_first(exc))) from None
    check_graph(p, cfg)
    return _build_plan(p, cfg, chosen_mode, vdir, env)


def _build_plan(path: Path, cfg: SupervisorFile, mode: str, var_dir: Path, env: dict[str, str]) -> StackPlan:
    levels = dependency_levels({n: s.depends_on for n, s in cfg.services.items()})
    order = sorted(cfg.services, key=lambda n: (levels[n], list(cfg.services).index(n)))
    services: dict[str, Service] = {}
    for name in order:
        spec = cfg.services[name]
        for key, text in (("cmd", _join(spec.cmd)), ("url", spec.url or ""),
                          ("readiness", spec.readiness.describe() if spec.readiness else "")):
            if "{metrics_port}" in text:
                raise ConfigError(f"{path}: services.{name}.{key}: uses {{metrics_port}} but it is not set")
        child_env = dict(env)
        child_env.pop("METRICS_PORT", None)  # one port per service: never inherit the supervisor's
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env["TRADESTACK_SERVICE"] = name
        if spec.metrics_port:
            child_env["METRICS_PORT"] = str(spec.metrics_port)
        child_env.update({k: _env_str(v) for k, v in spec.env.items()})
        cwd = Path(spec.cwd) if spec.cwd else PROJECT_ROOT
        services[name] = Service(
            name=name, spec=spec, argv=spec.argv, env=child_env,
            cwd=cwd if cwd.is_absolute() else PROJECT_ROOT / cwd,
            enabled=spec.enabled and mode in spec.modes, url=_default_url(spec),
            log=cfg.defaults.log, level=levels[name])
    return StackPlan(path=path, mode=mode, var_dir=var_dir, services=services)


#: This layer's config files for ``make check-config`` (registered in pyproject.toml, see core.check_config).
CONFIG_CHECKS: list[tuple[str, Callable[[Path], object]]] = [
    ("process_supervisor.yaml", lambda p: load_supervisor_config(p)),
]
