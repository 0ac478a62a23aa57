"""`python -m broker ROLE ...`: how `arbees launch` starts its children, independent of PATH."""

from broker.cli import main

main(prog_name="arbees")
