"""MSFT multi-scale finetuning: the network modules, its forecasting and the released class."""
