"""The stage runner: every stage is a function from artifacts to an artifact.

Why: the SkillFactory method is a chain (bootstrap -> sample -> reflect -> traces -> sft ->
rl -> eval) whose early stages are expensive and shared by many experiments. Each stage
declares the config slice it reads and its upstream stages; its artifact directory is
keyed by a fingerprint of (stage name, code version, config slice, upstream
fingerprints). So:

- a rerun of a finished command does no stage work (every manifest is found);
- a sweep over SFT settings reuses the sampled and reflected data (their slices are equal);
- a killed run resumes: a directory without ``manifest.json`` is unfinished, and a
  resumable stage continues from what it wrote (e.g. finished shards), others redo;
- concurrent jobs that need the same artifact take a file lock: one produces, the others
  wait and reuse.

``manifest.json`` is written last and atomically, so its presence is the only sign of a
finished artifact.

Defining a stage::

    @stage("sample", config=("model", "task", "sample", "seed"),
           upstream=lambda cfg: ("bootstrap",) if cfg.model.path is None else ())
    def sample(ctx: StageContext) -> dict:
        ...write files under ctx.out_dir...
        return {"questions": 8000}        # counts, stored in the manifest
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from filelock import FileLock, Timeout

from skill_factory.errors import SkillFactoryError
from skill_factory.provenance import git_revision, package_versions, scrub

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FINGERPRINT_LENGTH = 16
# Canonical order of the method's stages; user stages (plugins) sort after these.
PIPELINE_ORDER = ("bootstrap", "sample", "reflect", "traces", "sft", "rl", "eval")

Upstream = Callable[[Any], Sequence[str]]


@dataclass(frozen=True)
class Artifact:
    """A finished stage output: its directory and manifest."""

    stage: str
    path: Path
    fingerprint: str
    manifest: dict

    @property
    def counts(self) -> dict:
        return self.manifest.get("counts", {})


@dataclass
class StageContext:
    """What a stage function gets: typed config, its inputs and where to write."""

    cfg: Any
    stage: "Stage"
    out_dir: Path
    fingerprint: str
    inputs: dict[str, Artifact]
    # True when out_dir holds an unfinished attempt the stage may continue from
    resuming: bool
    log: logging.Logger


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[StageContext], dict | None]
    # dotted keys into the typed config whose values determine the output
    config_keys: tuple[str, ...]
    upstream: Upstream
    # bump when a code change alters the stage's output, so old artifacts are not reused
    version: str = "1"
    # the stage can continue from an unfinished directory instead of starting over
    resumable: bool = False
    # semantic checks of the config this stage reads, run by validate() before any work
    check: Callable[[Any, Any], None] | None = None

    def upstream_of(self, cfg) -> tuple[str, ...]:
        return tuple(self.upstream(cfg))


REGISTRY: dict[str, Stage] = {}


def stage(name: str, *, config: Iterable[str], upstream: Sequence[str] | Upstream = (),
          version: str = "1", resumable: bool = False,
          check: Callable[[Any, Any], None] | None = None):
    """Register ``fn`` as the stage ``name`` (decorator)."""
    if callable(upstream):
        upstream_fn = upstream
    else:
        fixed = tuple(upstream)
        upstream_fn = lambda cfg: fixed  # noqa: E731

    def register(fn: Callable[[StageContext], dict | None]):
        REGISTRY[name] = Stage(name, fn, tuple(config), upstream_fn, version, resumable, check)
        return fn

    return register


def config_slice(cfg: Any, keys: Iterable[str]) -> dict:
    """The values of dotted ``keys`` in a typed config, as plain JSON-able data."""
    out = {}
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        out[key] = to_plain(node)
    return out


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(stage: Stage, slice_: dict, upstream: dict[str, str]) -> str:
    """Hash of everything that determines a stage's output."""
    payload = {"stage": stage.name, "version": stage.version, "config": slice_,
               "upstream": upstream}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:FINGERPRINT_LENGTH]


def order_stages(names: Iterable[str]) -> list[str]:
    rank = {n: i for i, n in enumerate(PIPELINE_ORDER)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def plan(cfg: Any, registry: dict[str, Stage] | None = None) -> list[str]:
    """Requested stages plus every upstream stage they need, in dependency order."""
    registry = REGISTRY if registry is None else registry
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, needed_by: str | None) -> None:
        if name in order:
            return
        if name not in registry:
            who = f" (needed by {needed_by})" if needed_by else ""
            raise SkillFactoryError(f"stages: unknown stage '{name}'{who}; known: "
                                    f"{', '.join(order_stages(registry))}")
        if name in visiting:
            raise SkillFactoryError(f"stages: dependency cycle through '{name}'")
        visiting.add(name)
        for up in registry[name].upstream_of(cfg):
            visit(up, name)
        visiting.discard(name)
        order.append(name)

    for name in order_stages(cfg.stages):
        visit(name, None)
    return order


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return None


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class RunRecord:
    """What one run used: per stage the artifact, its fingerprint and how it was obtained."""

    entries: dict[str, dict] = field(default_factory=dict)

    def add(self, art: Artifact, status: str, seconds: float) -> None:
        self.entries[art.stage] = {"path": str(art.path), "fingerprint": art.fingerprint,
                                   "status": status, "seconds": round(seconds, 3)}


class Runner:
    """Materialises the planned stages, reusing finished artifacts from the cache."""

    def __init__(self, cfg: Any, artifacts_root: Path, registry: dict[str, Stage] | None = None,
                 on_stage_done: Callable[[Artifact, str], None] | None = None,
                 lock_poll_seconds: float = 30.0):
        self.cfg = cfg
        self.root = Path(artifacts_root)
        self.registry = REGISTRY if registry is None else registry
        self.on_stage_done = on_stage_done
        self.lock_poll_seconds = lock_poll_seconds
        self.record = RunRecord()

    def run(self) -> dict[str, Artifact]:
        names = plan(self.cfg, self.registry)
        requested = set(self.cfg.stages)
        done: dict[str, Artifact] = {}
        for name in names:
            st = self.registry[name]
            inputs = {up: done[up] for up in st.upstream_of(self.cfg)}
            if name not in requested:
                log.info("%s is needed by a requested stage", name)
            done[name] = self.materialize(st, inputs)
        return done

    def artifact_dir(self, st: Stage, fp: str) -> Path:
        return self.root / st.name / fp

    def materialize(self, st: Stage, inputs: dict[str, Artifact]) -> Artifact:
        slice_ = config_slice(self.cfg, st.config_keys)
        upstream = {name: art.fingerprint for name, art in sorted(inputs.items())}
        fp = fingerprint(st, slice_, upstream)
        out = self.artifact_dir(st, fp)
        out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with self._lock(out, st.name):
            manifest = read_manifest(out)
            if manifest is not None:
                art = Artifact(st.name, out, fp, manifest)
                log.info("%s: reusing finished artifact %s", st.name, out)
                status = "cached"
            else:
                resuming = out.exists() and st.resumable
                if out.exists() and not resuming:
                    log.warning("%s: %s holds an unfinished attempt; starting over", st.name, out)
                    shutil.rmtree(out)
                elif resuming:
                    log.info("%s: resuming the unfinished attempt in %s", st.name, out)
                out.mkdir(parents=True, exist_ok=True)
                art = self._produce(st, out, fp, slice_, inputs, resuming)
                status = "resumed" if resuming else "produced"
        seconds = time.perf_counter() - start
        self.record.add(art, status, seconds)
        if self.on_stage_done is not None:
            self.on_stage_done(art, status)
        return art

    def _produce(self, st: Stage, out: Path, fp: str, slice_: dict,
                 inputs: dict[str, Artifact], resuming: bool) -> Artifact:
        log.info("%s: producing %s", st.name, out)
        ctx = StageContext(self.cfg, st, out, fp, inputs, resuming,
                           logging.getLogger(f"skill_factory.stage.{st.name}"))
        start = time.perf_counter()
        try:
            counts = st.fn(ctx) or {}
        except SkillFactoryError:
            # A user error leaves no partial artifact behind (unless the stage can resume).
            if not st.resumable:
                shutil.rmtree(out, ignore_errors=True)
            raise
        manifest = {
            "stage": st.name,
            "fingerprint": fp,
            "version": st.version,
            "config": scrub(slice_),
            "upstream": {name: {"fingerprint": a.fingerprint, "path": str(a.path)}
                         for name, a in sorted(inputs.items())},
            "counts": scrub(to_plain(counts)),
            "packages": package_versions(),
            "git_revision": git_revision(),
            "wall_time_s": round(time.perf_counter() - start, 3),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
        }
        _write_json_atomic(out / MANIFEST, manifest)
        log.info("%s: finished in %.1f s -> %s", st.name, manifest["wall_time_s"], out)
        return Artifact(st.name, out, fp, manifest)

    @contextmanager
    def _lock(self, out: Path, name: str) -> Iterator[None]:
        lock = FileLock(str(out) + ".lock")
        while True:
            try:
                lock.acquire(timeout=self.lock_poll_seconds)
                break
            except Timeout:
                log.info("%s: waiting for another job producing %s", name, out)
        try:
            yield
        finally:
            lock.release()

    def write_record(self, run_dir: Path) -> Path:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        path = Path(run_dir) / "artifacts.json"
        _write_json_atomic(path, self.record.entries)
        return path
