"""`michi maturity`: where this installation stands on the MLOps maturity road, criterion by criterion.

`criteria` is the fixed list (Google's levels 0-2, Microsoft's 0-4; docs/maturity.md), `records` opens this
installation's stores without writing to them, `evidence` reads each kind of evidence through the stores' own
readers, and `report` turns the criteria into verdicts (met, not met, shown by CI, unknown) and renders them.
"""
