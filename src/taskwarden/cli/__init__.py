"""The ``taskwarden`` command: run the service, register and inspect watches, steer them, play
with the simulator, and run the demo. One module per family of commands (:mod:`.run`,
:mod:`.watches`, :mod:`.actions`, :mod:`.ops`), over the helpers they share (:mod:`.common`)."""

from __future__ import annotations

import click

from taskwarden.cli import actions, ops, run, watches


@click.group()
@click.version_option(package_name="taskwarden")
def main() -> None:
    """Watch long-running remote tasks until they finish, then archive their outputs."""


for _command in (*run.COMMANDS, *watches.COMMANDS, *actions.COMMANDS, *ops.COMMANDS):
    main.add_command(_command)

__all__ = ["main"]
