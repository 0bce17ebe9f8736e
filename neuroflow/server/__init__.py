"""A team's tracking server: Debian's PostgreSQL under it (postgres)."""
