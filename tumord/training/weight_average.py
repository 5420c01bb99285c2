"""An exponential moving average of the weights during training (Polyak averaging).

The averaged weights sit in a flatter part of the loss surface than the last step's, and usually
rank unseen images better; they cost one pass over the parameters per step and nothing at
prediction time. Batch-norm statistics are averaged too, so the averaged network can predict even
without recomputed statistics (precise BN replaces them when it is on).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tumord.nn.network import Network


class WeightAverage:
    def __init__(self, net: Network, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight-average decay {decay!r}: expected a number between 0 and 1, e.g. 0.999")
        self.decay = decay
        self.updates = 0
        self.state = net.copy_state()

    def update(self, net: Network) -> None:
        # the decay ramps up (as in TensorFlow's ExponentialMovingAverage with num_updates), so the
        # random initial weights are forgotten in the first few hundred steps
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in net.state_dict().items():
            average = self.state[name]
            average += (1 - decay) * (value - average)

    @contextmanager
    def swapped_in(self, net: Network) -> Iterator[None]:
        """The network holds the averaged weights inside the block and its own weights after it."""
        own = net.copy_state()
        net.load_state_dict(self.state)
        try:
            yield
        finally:
            net.load_state_dict(own)
