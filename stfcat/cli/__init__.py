"""Command-line interface (typer). Each ``*_cmds`` module adds its commands to ``main.app``."""
