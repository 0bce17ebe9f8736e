"""Where the project runs beyond `mlflow run .` here: the env files MLflow builds environments
from (envs), Databricks (databricks submits, bundle reads databricks.yml, tasks hands values
between a job's tasks) and the PostgreSQL a team's server keeps its runs in (postgres)."""
