"""Epoch checkpoints for the embedding trainers: a run killed mid-training continues from its last finished epoch
and ends with the same vectors as a run never stopped (the tensors and the random generator's state are restored).

    checkpoint = EpochCheckpoint(Path("out/.cbow.checkpoint"))
    train_word2vec(ids, starts, vocab, settings, checkpoint=checkpoint)   # saves after every epoch but the last

A checkpoint folder holds `tensors.safetensors` (the trainer's tensors and, as uint8, the generator state) and
`state.json` (the epoch count and the trainer's scalars), written last and renamed into place: a folder without a
parsable `state.json` is incomplete and ignored. Safetensors and JSON only, nothing pickled.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass
class EpochState:
    epoch: int                       # epochs finished
    tensors: dict[str, torch.Tensor]
    generator_state: torch.Tensor    # torch.Generator.get_state()
    scalars: dict                    # what else the trainer needs (e.g. words done, for the learning rate)


class EpochCheckpoint:
    """The last finished epoch of one trainer, in `folder` (replaced at every save)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def save(self, state: EpochState) -> None:
        partial = self.folder.with_name(self.folder.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.tensors.items()}
        save_file({**tensors, "generator_state": state.generator_state.cpu()}, str(partial / "tensors.safetensors"))
        (partial / "state.json").write_text(json.dumps({"epoch": state.epoch, "scalars": state.scalars}))
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(partial, self.folder)

    def load(self) -> EpochState | None:
        """The saved state, or None when there is none (or only an incomplete one). A save killed between removing
        the old folder and renaming the new one left the new one complete under `.partial`: that one is read."""
        for folder in (self.folder, self.folder.with_name(self.folder.name + ".partial")):
            try:
                meta = json.loads((folder / "state.json").read_text())
                tensors = load_file(str(folder / "tensors.safetensors"))
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            generator_state = tensors.pop("generator_state")
            return EpochState(meta["epoch"], tensors, generator_state, meta["scalars"])
        return None

    def remove(self) -> None:
        for folder in (self.folder, self.folder.with_name(self.folder.name + ".partial")):
            if folder.exists():
                shutil.rmtree(folder)
