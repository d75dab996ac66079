"""``python -m data_tools``: the dataset builders' command line."""

from data_tools.cli import cli

if __name__ == "__main__":
    cli(prog_name="python -m data_tools")
