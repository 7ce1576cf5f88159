"""`python -m ml_backend.cli` is the same as `labelloop`."""

from ml_backend.cli import main

main()
