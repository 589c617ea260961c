"""TRL's training progress through the builder's own rich progress bar, via transformers' public callback API."""

from transformers import TrainerCallback

from builder.core.progress import progress_bar

SHOWN = ("loss", "learning_rate", "rewards/accuracies", "rewards/margins", "mean_token_accuracy")


class RichProgress(TrainerCallback):
    """A bar over optimizer steps (done/total, rate, ETA), with the latest logged metrics beside it."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = progress_bar()
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar:
            self.bar.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar and logs:
            metrics = ", ".join(f"{k} {logs[k]:.4g}" for k in SHOWN if isinstance(logs.get(k), (int, float)))
            if metrics:
                self.bar.update(self.task, description=f"{self.label} · {metrics}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar:
            self.bar.stop()
            self.bar = None
