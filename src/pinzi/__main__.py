"""`python -m pinzi` runs the command-line interface."""

from pinzi.cli import main

main()
