"""The distilled MLP student (TimeDistill): the released class and the distillation losses."""
