"""A resumed run gives exactly the losses of an uninterrupted one."""

from pathlib import Path

from vlp.config import apply_overrides
from vlp.experiment.presets import experiment_preset
from vlp.experiment.run import train_experiment
from vlp.train.logging import read_metrics


def tiny_cfg(scenes: Path, steps: int):
    cfg = experiment_preset("clip_tiny")
    return apply_overrides(
        cfg,
        [f"data.path={scenes}", f"train.max_steps={steps}", "train.log_every=1", "train.checkpoint_every=3",
         "train.batch_size=16", "train.tensorboard=false", "model.image_encoder.dropout=0.1"],
    )


def test_resume_gives_the_same_losses(tiny_scenes: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    train_experiment(tiny_cfg(tiny_scenes, 20), full, log=lambda *_: None)
    reference = [r["loss"] for r in read_metrics(full)]
    assert len(reference) == 20

    # the same run stopped after step 9 (last checkpoint at step 9) then resumed to 20 steps
    part = tmp_path / "part"
    cfg = tiny_cfg(tiny_scenes, 20)
    import vlp.train.trainer as trainer_module

    class StopAfter(Exception):
        pass

    original = trainer_module.save_checkpoint

    def save_then_die(directory, module, optimizer, state, keep=2, **kwargs):
        path = original(directory, module, optimizer, state, keep, **kwargs)
        if state.step == 9:
            raise StopAfter()
        return path

    trainer_module.save_checkpoint = save_then_die
    try:
        try:
            train_experiment(cfg, part, log=lambda *_: None)
        except StopAfter:
            pass
    finally:
        trainer_module.save_checkpoint = original
    train_experiment(cfg, part, resume=True, log=lambda *_: None)
    resumed = [r["loss"] for r in read_metrics(part)]
    assert [r["step"] for r in read_metrics(part)] == list(range(1, 21))
    assert resumed == reference  # bit-exact on CPU
