"""Training-loop hooks the tests use to interrupt runs the way Ctrl-C does."""

from stfcat.engine.train import Hook


class StopAfterEpochs(Hook):
    """Raise the stop flag after ``n`` epochs, as a Ctrl-C would."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, loop, entry):
        if loop.epochs_done >= self.n:
            loop.request_stop()
