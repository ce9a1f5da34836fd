"""The command line: `serve`, `validate`, `demo`, `check`, and `--workers`."""
