"""python -m neuroflow.server start | users add NAME --role ROLE | users role NAME --role ROLE"""

import click

from neuroflow import cli
from neuroflow.server.launch import start
from neuroflow.server.users import users


@click.group()
def server():
    """A team's tracking server: start it, and manage its users."""


server.add_command(start)
server.add_command(users)

if __name__ == "__main__":
    cli.run(server)
