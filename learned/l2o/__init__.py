"""L2O structures (L2O-DM, RNNprop, Math-L2O) behind the learned-optimizer interface."""
__all__: list[str] = []
