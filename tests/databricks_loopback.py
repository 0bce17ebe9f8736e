"""A loopback Databricks workspace: what `mlflow run -b databricks` calls, served on 127.0.0.1
and carried out on this machine, so the Databricks backend is tested without a workspace.

- DBFS: `get-status`, and the upload, which MLflow POSTs to the FUSE path /dbfs/<path>; files
  land in a folder of the workspace's root.
- Jobs: `runs/submit` runs the submitted shell command as a single-node cluster would, with the
  cluster's spark_env_vars and the task's env_vars, DBFS paths mapped to that folder and the
  driver's /databricks paths to another; `runs/get` reports life_cycle_state and result_state
  as Databricks does; `runs/cancel` stops the job.
- Multi-task jobs: a `runs/submit` with tasks runs each spark_python_task once the tasks it
  depends on have succeeded (side by side where they can), skips those after a failure
  (UPSTREAM_FAILED), installs a task's `requirements` library by checking that this
  environment holds every pin, and resolves {{job.run_id}}, {{task.name}} and
  {{tasks.<task>.values.<key>}} in its parameters. The task runs with the runtime's `dbruntime`
  module, whose dbutils.jobs.taskValues keeps what the task sets; `runs/get` lists the tasks.
  A cluster's `databricks` tracking URI is the workspace's own REST API: here, the workspace URL.
- Workspace files: `workspace/mkdirs`, `workspace/import` (base64 content) and `get-status`,
  kept under <root>/workspace; `preview/scim/v2/Me` names the user.
- The MLflow REST API (/api/2.0/mlflow, /api/2.0/mlflow-artifacts, /ajax-api) is passed through
  to a real `mlflow server`, so the client and the job both track through the workspace.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

PASSTHROUGH = ("/api/2.0/mlflow", "/api/2.0/mlflow-artifacts", "/ajax-api")
USER = "tests@example.com"
REFERENCE = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")

# The runtime's own module, which only clusters have: the namespace a task's
# `from databricks.sdk.runtime import dbutils` gets, with task values kept in a JSON file.
DBRUNTIME = """import json, os


class _TaskValues:
    def set(self, key, value):
        path = os.environ["LOOPBACK_TASK_VALUES"]
        values = json.load(open(path)) if os.path.exists(path) else {}
        values[key] = value
        with open(path, "w") as file:
            json.dump(values, file)

    def get(self, taskKey, key, default=None, debugValue=None):
        raise NotImplementedError("the loopback resolves task values in parameters only")


class _Jobs:
    taskValues = _TaskValues()


class _DbUtils:
    jobs = _Jobs()


class UserNamespaceInitializer:
    @classmethod
    def getOrCreate(cls):
        return cls()

    def get_namespace_globals(self):
        return {"dbutils": _DbUtils()}
"""
DRIVER_PATHS = "/databricks/mlflow"  # where MLflow's job command unpacks the project

# Clusters have rsync; a machine without it gets a stand-in for the one call MLflow's job
# command makes: rsync -a -v --ignore-existing SRC DEST_DIR
RSYNC = """#!{python}
import os, shutil, sys
source, folder = sys.argv[-2], sys.argv[-1]
target = os.path.join(folder, os.path.basename(source))
if not os.path.exists(target):
    shutil.copy(source, target)
"""


@dataclass
class Job:
    payload: dict
    process: subprocess.Popen | None = None
    result_state: str | None = None  # SUCCESS, FAILED or CANCELED once terminated
    state_message: str = ""
    log: Path | None = None
    tasks: dict[str, TaskRun] | None = None  # a multi-task job's, by task key
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"job still running after {timeout} s")


@dataclass
class TaskRun:
    task: dict
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""
    start_time: float = 0.0
    end_time: float = 0.0
    values: dict = field(default_factory=dict)
    log: Path | None = None
    process: subprocess.Popen | None = None


@dataclass
class Workspace:
    root: Path
    mlflow_url: str  # the real tracking server behind the passthrough
    job_env: dict = field(default_factory=dict)  # the cluster's own environment
    submissions: list[dict] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # "METHOD /path", in order
    jobs: dict[int, Job] = field(default_factory=dict)

    def __post_init__(self):
        self.dbfs = self.root / "dbfs"
        self.driver = self.root / "driver"
        self.bin = self.root / "bin"
        self.files = self.root / "workspace"
        self.runtime = self.root / "runtime"
        for folder in (self.dbfs, self.driver, self.bin, self.files, self.runtime / "dbruntime"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.runtime / "dbruntime" / "__init__.py").write_text(DBRUNTIME)
        if shutil.which("rsync") is None:
            (self.bin / "rsync").write_text(RSYNC.format(python=sys.executable))
            (self.bin / "rsync").chmod(0o755)
        self._lock = threading.Lock()

    def start(self) -> str:
        workspace = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                workspace.handle(self)

            def do_POST(self):
                workspace.handle(self)

            def do_PUT(self):
                workspace.handle(self)

            def do_PATCH(self):
                workspace.handle(self)

            def do_DELETE(self):
                workspace.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # stop() waits up to one poll interval for the loop to notice
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        for job in self.jobs.values():
            for process in [job.process, *(t.process for t in (job.tasks or {}).values())]:
                if process and process.poll() is None:
                    process.kill()
        self.server.shutdown()

    # -- routing -----------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = urllib.parse.urlsplit(request.path).path
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append(f"{request.command} {path}")
        if path.startswith(PASSTHROUGH):
            return self._pass_through(request, body)
        path = re.sub(r"^/api/2\.[0-9]/jobs/", "/api/2.0/jobs/", path)  # any Jobs API version
        routes = {
            "/api/2.0/dbfs/get-status": self._get_status,
            "/api/2.0/jobs/runs/submit": self._submit,
            "/api/2.0/jobs/runs/get": self._runs_get,
            "/api/2.0/jobs/runs/cancel": self._cancel,
            "/api/2.0/preview/scim/v2/Me": self._me,
            "/api/2.0/workspace/mkdirs": self._mkdirs,
            "/api/2.0/workspace/import": self._import,
            "/api/2.0/workspace/get-status": self._workspace_status,
        }
        if path in routes:
            return routes[path](request, body)
        if path.startswith("/dbfs/") and request.command == "POST":
            return self._upload(request, path, body)
        self._reply(request, 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": path})

    def _reply(self, request, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    # -- DBFS --------------------------------------------------------------------------------

    def local(self, dbfs_path: str) -> Path:
        """dbfs:/x, /dbfs/x and /x all name <root>/dbfs/x."""
        relative = dbfs_path.removeprefix("dbfs:").removeprefix("/dbfs").lstrip("/")
        target = (self.dbfs / relative).resolve()
        if not target.is_relative_to(self.dbfs.resolve()):
            raise ValueError(f"{dbfs_path} leaves DBFS")
        return target

    def _get_status(self, request, body: bytes) -> None:
        target = self.local(json.loads(body or b"{}")["path"])
        if not target.exists():
            return self._reply(
                request,
                404,
                {
                    "error_code": "RESOURCE_DOES_NOT_EXIST",
                    "message": f"No file or directory exists on path {target}",
                },
            )  # noqa: E501
        self._reply(
            request,
            200,
            {"path": str(target), "is_dir": target.is_dir(), "file_size": target.stat().st_size},
        )

    def _upload(self, request, path: str, body: bytes) -> None:
        target = self.local(path)
        if target.exists():
            return self._reply(
                request,
                409,
                {"error_code": "RESOURCE_ALREADY_EXISTS", "message": "File already exists"},
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        self._reply(request, 200, {})

    def uploads(self) -> list[Path]:
        return sorted(p for p in self.dbfs.rglob("*") if p.is_file())

    # -- Jobs --------------------------------------------------------------------------------

    def _submit(self, request, body: bytes) -> None:
        payload = json.loads(body)
        with self._lock:
            self.submissions.append(payload)
            run_id = len(self.jobs) + 1
            self.jobs[run_id] = job = Job(payload, log=self.root / f"job-{run_id}.log")
        target = self._run_tasks if "tasks" in payload else self._run_job
        threading.Thread(target=target, args=(job,), daemon=True).start()
        self._reply(request, 200, {"run_id": run_id})

    def _run_job(self, job: Job) -> None:
        task = job.payload["shell_command_task"]
        command = list(task["command"])
        command[-1] = (
            command[-1].replace("/dbfs/", f"{self.dbfs}/").replace(DRIVER_PATHS, str(self.driver))
        )
        cluster_env = job.payload["new_cluster"].get("spark_env_vars", {})
        env = {**os.environ, **self.job_env, **cluster_env, **task.get("env_vars", {})}
        env["PATH"] = f"{self.bin}{os.pathsep}{env['PATH']}"
        with open(job.log, "w") as log:
            job.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
            code = job.process.wait()
        if job.result_state is None:
            job.result_state = "SUCCESS" if code == 0 else "FAILED"
        job.done.set()

    def _runs_get(self, request, body: bytes) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        run_id = int(query["run_id"][0])
        job = self.jobs.get(run_id)
        if job is None:
            return self._reply(
                request,
                400,
                {
                    "error_code": "INVALID_PARAMETER_VALUE",
                    "message": f"Run {run_id} does not exist.",
                },
            )
        if job.result_state is None:
            state = {"life_cycle_state": "RUNNING", "state_message": "In run"}
        else:
            state = {
                "life_cycle_state": "TERMINATED",
                "result_state": job.result_state,
                "state_message": job.state_message,
            }
        reply = {
            "run_id": run_id,
            "state": state,
            "run_page_url": f"{self.url}/#job/1/run/{run_id}",
        }
        if job.tasks is not None:
            reply["tasks"] = [task_state(key, task) for key, task in job.tasks.items()]
        self._reply(request, 200, reply)

    def _cancel(self, request, body: bytes) -> None:
        job = self.jobs[int(json.loads(body)["run_id"])]
        job.result_state = "CANCELED"
        processes = [job.process, *(task.process for task in (job.tasks or {}).values())]
        for process in processes:
            if process and process.poll() is None:
                process.terminate()
        self._reply(request, 200, {})

    # -- multi-task jobs ---------------------------------------------------------------------

    def _run_tasks(self, job: Job) -> None:
        """Each task once its dependencies succeeded, as many at once as are ready."""
        job.tasks = {t["task_key"]: TaskRun(t) for t in job.payload["tasks"]}
        running = {}
        with ThreadPoolExecutor(len(job.tasks)) as pool:
            while True:
                for key, task in job.tasks.items():
                    if task.life_cycle_state != "PENDING" or key in running:
                        continue
                    upstream = [job.tasks[d["task_key"]] for d in task.task.get("depends_on", [])]
                    if job.result_state == "CANCELED" or any(
                        u.result_state not in (None, "SUCCESS") for u in upstream
                    ):
                        task.life_cycle_state, task.result_state = "SKIPPED", "UPSTREAM_FAILED"
                    elif all(u.result_state == "SUCCESS" for u in upstream):
                        running[key] = pool.submit(self._run_task, job, key)
                if not running:
                    break
                finished, _ = wait(running.values(), return_when=FIRST_COMPLETED)
                running = {k: f for k, f in running.items() if f not in finished}
        results = [task.result_state for task in job.tasks.values()]
        if job.result_state is None:
            failed = [key for key, task in job.tasks.items() if task.result_state == "FAILED"]
            job.result_state = "SUCCESS" if set(results) == {"SUCCESS"} else "FAILED"
            job.state_message = f"tasks failed: {', '.join(failed)}" if failed else ""
        job.done.set()

    def _run_task(self, job: Job, key: str) -> None:
        task = job.tasks[key]
        task.life_cycle_state, task.start_time = "RUNNING", time.time()
        task.log = self.root / f"job-{len(self.jobs)}-{key}.log"
        try:
            command, env = self._task_command(job, key)
        except ValueError as error:
            task.result_state, task.state_message = "FAILED", str(error)
        else:
            with open(task.log, "w") as log:
                task.process = subprocess.Popen(
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=Path(command[1]).parent,
                )
                code = task.process.wait()
            values = Path(env["LOOPBACK_TASK_VALUES"])
            task.values = json.loads(values.read_text()) if values.exists() else {}
            task.result_state = "SUCCESS" if code == 0 else "FAILED"
            if code:
                task.state_message = f"exit code {code}"
        task.life_cycle_state, task.end_time = "TERMINATED", time.time()

    def _task_command(self, job: Job, key: str) -> tuple[list[str], dict]:
        """The task's process, as its cluster starts it; ValueError for what a cluster refuses."""
        task = job.tasks[key].task
        for library in task.get("libraries", []):
            self._install(library)
        python = task["spark_python_task"]

        def resolve(match) -> str:
            reference = match.group(1)
            if reference == "job.run_id":
                return str(next(r for r, j in self.jobs.items() if j is job))
            if reference == "task.name":
                return key
            parts = reference.split(".")
            if len(parts) == 4 and parts[0] == "tasks" and parts[2] == "values":
                values = job.tasks[parts[1]].values if parts[1] in job.tasks else {}
                if parts[3] not in values:
                    raise ValueError(f"task value {reference} was never set")
                return str(values[parts[3]])
            raise ValueError(f"unknown reference {{{{{reference}}}}}")

        arguments = [REFERENCE.sub(resolve, a) for a in python.get("parameters", [])]
        script = self.workspace_file(python["python_file"])
        if not script.is_file():
            raise ValueError(f"{python['python_file']} does not exist")
        cluster_env = task["new_cluster"].get("spark_env_vars", {})
        env = {**os.environ, **self.job_env, **cluster_env}
        env["MLFLOW_TRACKING_URI"] = self.url
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(self.runtime), env.get("PYTHONPATH")])
        )
        env["LOOPBACK_TASK_VALUES"] = str(self.root / f"values-{id(job)}-{key}.json")
        return [sys.executable, str(script), *arguments], env

    def _install(self, library: dict) -> None:
        """A `requirements` library: this environment must hold every pin of the file."""
        if "requirements" not in library:
            raise ValueError(f"the loopback installs requirements files only, not {library}")
        path = self.workspace_file(library["requirements"])
        if not path.is_file():
            raise ValueError(f"library installation failed: {library['requirements']} not found")
        for line in path.read_text().splitlines():
            name, sep, version = line.split("#")[0].strip().partition("==")
            if sep and metadata.version(name) != version:
                raise ValueError(f"library installation failed: {name}=={version}")

    # -- workspace files ---------------------------------------------------------------------

    def workspace_file(self, path: str) -> Path:
        """/Workspace/x and /x both name <root>/workspace/x."""
        relative = path.removeprefix("/Workspace").lstrip("/")
        target = (self.files / relative).resolve()
        if not target.is_relative_to(self.files.resolve()):
            raise ValueError(f"{path} leaves the workspace")
        return target

    def _me(self, request, body: bytes) -> None:
        self._reply(request, 200, {"id": "1", "userName": USER, "active": True})

    def _mkdirs(self, request, body: bytes) -> None:
        self.workspace_file(json.loads(body)["path"]).mkdir(parents=True, exist_ok=True)
        self._reply(request, 200, {})

    def _import(self, request, body: bytes) -> None:
        payload = json.loads(body)
        target = self.workspace_file(payload["path"])
        if target.exists() and not payload.get("overwrite"):
            return self._reply(
                request, 400, {"error_code": "RESOURCE_ALREADY_EXISTS", "message": str(target)}
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(payload.get("content", "")))
        self._reply(request, 200, {})

    def _workspace_status(self, request, body: bytes) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        target = self.workspace_file(query["path"][0])
        if not target.exists():
            return self._reply(
                request, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": str(target)}
            )
        kind = "DIRECTORY" if target.is_dir() else "FILE"
        self._reply(request, 200, {"path": query["path"][0], "object_type": kind})

    # -- MLflow passthrough ------------------------------------------------------------------

    def _pass_through(self, request, body: bytes) -> None:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")
        }
        forwarded = urllib.request.Request(
            self.mlflow_url + request.path,
            data=body or None,
            headers=headers,
            method=request.command,
        )
        try:
            with urllib.request.urlopen(forwarded, timeout=120) as response:
                status, data, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, data, kind = error.code, error.read(), error.headers
        request.send_response(status)
        request.send_header("Content-Type", kind.get("Content-Type", "application/json"))
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


def task_state(key: str, task: TaskRun) -> dict:
    state = {"life_cycle_state": task.life_cycle_state, "state_message": task.state_message}
    if task.result_state:
        state["result_state"] = task.result_state
    times = {"start_time": int(task.start_time * 1000), "end_time": int(task.end_time * 1000)}
    return {"task_key": key, "state": state, **times}
