"""One task of the Databricks job in databricks.yml: an entry point, run as `mlflow run` runs it.

    python databricks/task.py <entry point> --option=value ...

A job's spark_python_task runs this file as a script, from wherever the workspace keeps the
project; the project's root goes on sys.path and becomes the working directory, and the step
runs as `python -m steps.<entry point>` would, as a task (neuroflow.platforms.tasks).
"""

import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    files = os.listdir(os.path.join(ROOT, "steps"))
    steps = sorted(n[:-3] for n in files if n.endswith(".py") and not n.startswith("_"))
    if len(sys.argv) < 2 or sys.argv[1] not in steps:
        given = repr(sys.argv[1]) if len(sys.argv) > 1 else "nothing"
        sys.exit(f"task: {given} is not an entry point; expected one of {', '.join(steps)}")
    sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    from neuroflow.platforms.tasks import as_task

    as_task()
    entry_point = sys.argv.pop(1)
    runpy.run_module(f"steps.{entry_point}", run_name="__main__", alter_sys=True)
