"""The `moe-ts` command line: the top layer, above `pretrain`, `eval` and `data_prep` (docs/ARCHITECTURE.md §1).

`cli.main` dispatches the subcommands; `cli.forecast` and `cli.export` are the two that only need the model
library. Each module also runs as `python -m cli.<module>`.
"""
