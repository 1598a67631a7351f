"""CompareRuns' logic: which fields and metrics differ between runs (pure, thread-safe).

Inputs are what the repository read per run; outputs are :mod:`models` objects. Fields
come in section order (param, code, input, package, hardware, environment, tag), the
differing ones first. Packages are listed only where their versions differ (a run may
carry thousands). A metric's "best" is its min when the goal is to minimize (by default
for keys containing "loss" or "error"), else its max.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runstream.query.models import (
    MAXIMIZE,
    MINIMIZE,
    CodeVersion,
    ComparedField,
    ComparedMetric,
    Environment,
    Input,
    MetricStats,
    MetricSummary,
    Param,
    Tag,
)

SECTIONS = ("param", "code", "input", "package", "hardware", "environment", "tag")


def default_goal(key: str) -> str:
    """MINIMIZE for keys that name a loss or an error, else MAXIMIZE."""
    lowered = key.lower()
    return MINIMIZE if "loss" in lowered or "error" in lowered else MAXIMIZE


def format_bytes(n: int) -> str:
    """Bytes as GiB with one decimal ("" for 0 = unknown)."""
    return f"{n / 2**30:.1f} GiB" if n else ""


def gpu_summary(env: Environment) -> str:
    """"4x NVIDIA A100 (80.0 GiB)" style summary of the GPUs of a node."""
    counts: dict[str, int] = {}
    for gpu in env.gpus:
        label = gpu.name + (f" ({format_bytes(gpu.memory_bytes)})" if gpu.memory_bytes else "")
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n}x {label}" for label, n in counts.items())


def _field(section: str, key: str, values: Sequence[str]) -> ComparedField:
    return ComparedField(section=section, key=key, values=tuple(values),
                         differs=len(set(values)) > 1)


def _keyed(section: str, per_run: Sequence[Mapping[str, str]]) -> list[ComparedField]:
    keys = sorted(set().union(*per_run)) if per_run else []
    return [_field(section, k, [m.get(k, "") for m in per_run]) for k in keys]


def compare_fields(
    params: Sequence[Sequence[Param]],
    codes: Sequence[CodeVersion],
    inputs: Sequence[Sequence[Input]],
    envs: Sequence[Environment],
    tags: Sequence[Sequence[Tag]],
    world_sizes: Sequence[int],
    node_counts: Sequence[int],
) -> list[ComparedField]:
    """Every compared field; each argument holds one entry per run, in run order."""
    out: list[ComparedField] = []
    out += _keyed("param", [{p.key: p.value for p in ps} for ps in params])
    out += [
        _field("code", "git_commit", [c.git_commit for c in codes]),
        _field("code", "git_dirty",
               [str(c.git_dirty).lower() if c.in_git_repo else "" for c in codes]),
        _field("code", "diff_sha256", [c.diff_sha256 for c in codes]),
        _field("code", "git_branch", [c.git_branch for c in codes]),
        _field("code", "git_remote", [c.git_remote for c in codes]),
    ]
    out += _keyed("input", [
        {(f"{i.role}:" if i.role else "") + (i.name or i.uri): i.digest or i.uri for i in ins}
        for ins in inputs
    ])
    packages = _keyed("package", [{p.name: p.version for p in e.packages} for e in envs])
    out += [f for f in packages if f.differs]
    out += [
        _field("hardware", "world_size", [str(w) for w in world_sizes]),
        _field("hardware", "nodes", [str(n) for n in node_counts]),
        _field("hardware", "gpus", [gpu_summary(e) for e in envs]),
        _field("hardware", "gpu_driver", [e.gpu_driver for e in envs]),
        _field("hardware", "cuda_version", [e.cuda_version for e in envs]),
        _field("hardware", "cpu_model", [e.cpu_model for e in envs]),
        _field("hardware", "cpu_count", [str(e.cpu_count or "") for e in envs]),
        _field("hardware", "memory", [format_bytes(e.memory_bytes) for e in envs]),
        _field("environment", "python_version", [e.python_version for e in envs]),
        _field("environment", "os", [e.os for e in envs]),
        _field("environment", "command", [e.command for e in envs]),
    ]
    out += _keyed("tag", [{t.key: t.value for t in ts} for ts in tags])
    order = {s: i for i, s in enumerate(SECTIONS)}
    return sorted(out, key=lambda f: (not f.differs, order[f.section]))


def compare_metrics(
    keys: Sequence[str],
    summaries: Sequence[Mapping[str, MetricSummary]],
    best_steps: Sequence[Mapping[str, tuple[int, int]]],
    goals: Mapping[str, str],
) -> list[ComparedMetric]:
    """One ComparedMetric per key; ``summaries``/``best_steps`` hold one mapping per run.

    ``best_steps[i][key]`` is (step at min, step at max) of run i.
    """
    out = []
    for key in keys:
        goal = goals.get(key) or default_goal(key)
        stats = []
        for summary, steps in zip(summaries, best_steps, strict=True):
            m = summary.get(key)
            if m is None:
                stats.append(MetricStats(present=False))
                continue
            at_min, at_max = steps.get(key, (m.last_step, m.last_step))
            best, best_step = (m.min, at_min) if goal == MINIMIZE else (m.max, at_max)
            stats.append(MetricStats(present=True, last=m.last, last_step=m.last_step,
                                     min=m.min, max=m.max, best=best, best_step=best_step))
        candidates = [(s.best, i) for i, s in enumerate(stats) if s.present and s.best == s.best]
        best_run = -1
        if candidates:
            pick = min if goal == MINIMIZE else max
            best_run = pick(candidates, key=lambda c: (c[0], -c[1]) if pick is max else c)[1]
        lasts = {(s.present, s.last) for s in stats}
        out.append(ComparedMetric(key=key, goal=goal, stats=tuple(stats), best_run=best_run,
                                  differs=len(lasts) > 1))
    return out
