"""`python -m statefulmcp serve ...`, the same as the `statefulmcp` command."""

from statefulmcp.cli import main

main()
