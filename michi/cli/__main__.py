"""`python -m michi.cli ...` is the same as the `michi` console script."""

from michi.cli import main

main()
