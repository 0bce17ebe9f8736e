"""A team's tracking server: MLflow with its basic-auth app on Debian's PostgreSQL (launch,
postgres), the team's roles (roles, users) and the rules MLflow's permissions lack (auth).
`python -m neuroflow.server --help` lists its commands."""
