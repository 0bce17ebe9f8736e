"""A loopback Databricks workspace: what `mlflow run -b databricks` calls, served on 127.0.0.1
and carried out on this machine, so the Databricks backend is tested without a workspace.

- DBFS: `get-status`, and the upload, which MLflow POSTs to the FUSE path /dbfs/<path>; files
  land in a folder of the workspace's root.
- Jobs: `runs/submit` runs the submitted shell command as a single-node cluster would, with the
  cluster's spark_env_vars and the task's env_vars, DBFS paths mapped to that folder and the
  driver's /databricks paths to another; `runs/get` reports life_cycle_state and result_state
  as Databricks does; `runs/cancel` stops the job.
- The MLflow REST API (/api/2.0/mlflow, /api/2.0/mlflow-artifacts, /ajax-api) is passed through
  to a real `mlflow server`, so the client and the job both track through the workspace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PASSTHROUGH = ("/api/2.0/mlflow", "/api/2.0/mlflow-artifacts", "/ajax-api")
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
    log: Path | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"job still running after {timeout} s")


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
        for folder in (self.dbfs, self.driver, self.bin):
            folder.mkdir(parents=True, exist_ok=True)
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
            if job.process and job.process.poll() is None:
                job.process.kill()
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
        routes = {
            "/api/2.0/dbfs/get-status": self._get_status,
            "/api/2.0/jobs/runs/submit": self._submit,
            "/api/2.0/jobs/runs/get": self._runs_get,
            "/api/2.0/jobs/runs/cancel": self._cancel,
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
        threading.Thread(target=self._run_job, args=(job,), daemon=True).start()
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
                "state_message": "",
            }
        self._reply(
            request,
            200,
            {"run_id": run_id, "state": state, "run_page_url": f"{self.url}/#job/1/run/{run_id}"},
        )

    def _cancel(self, request, body: bytes) -> None:
        job = self.jobs[int(json.loads(body)["run_id"])]
        job.result_state = "CANCELED"
        if job.process and job.process.poll() is None:
            job.process.terminate()
        self._reply(request, 200, {})

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
