"""What every command shares: the store option, the one-line user error, and the report of a built version."""

import click

from builder.core.progress import console


class UserError(click.ClickException):
    exit_code = 2


def store_option(command):
    return click.option(
        "--store", envvar="BUILDER_STORE", default=None, show_envvar=True,
        help="Store folder for dataset versions [default: ./builder-store]",
    )(command)


def open_store(path):
    from builder.core.store import Store

    return Store(path)


def report_built(version, built: bool) -> None:
    if built:
        console.print(f"[bold green]built {version.id}[/] in {version.folder}")
    else:
        console.print(f"already built: {version.id} ({version.folder})")
