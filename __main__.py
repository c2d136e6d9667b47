"""Entry point of the Pulumi program; everything lives in ``infra/`` (see infra/program.py)."""

from infra.program import main

main()
