"""ResNet-50/101 inference (batch 1 and 32) and training steps (batch 32) against the peers."""

from __future__ import annotations

import numpy as np

from benchmarks import peers
from benchmarks.timing import Case


def synthetic_batch(batch: int, size: int, seed: int = 0):
    """Images in [-1, 1] and ImageNet labels, the same for every contender."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 1000, (batch,)).astype("int32")
    return x, y


def inference_cases(models: dict, batch: int, size: int = 224) -> list[Case]:
    """One `predict_on_batch` per run: the compiled inference path users get from Keras."""
    x, _ = synthetic_batch(batch, size)
    return [Case(name, (lambda m=m: m.predict_on_batch(x)), items=batch)
            for name, m in models.items()]


def compile_for_training(model):
    import keras

    # Same optimizer and loss for every peer; XLA off, as Keras chooses on CPU ("auto").
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=False)
    return model


def training_cases(models: dict, batch: int, size: int = 224) -> list[Case]:
    """One `train_on_batch` per run: forward, backward and SGD update."""
    x, y = synthetic_batch(batch, size)
    for m in models.values():
        compile_for_training(m)
    return [Case(name, (lambda m=m: m.train_on_batch(x, y)), items=batch)
            for name, m in models.items()]


def torchvision_cases(depth: int, batch: int, train: bool, size: int = 224,
                      bf16: bool = False) -> list[Case]:
    """torchvision at the same batch and size (only where torch is installed); `bf16` runs it
    under `torch.autocast("cpu", torch.bfloat16)`, torch's counterpart of mixed_bfloat16."""
    model = peers.torchvision_model(depth)
    if model is None:
        return []
    import contextlib

    import torch

    name = peers.TORCHVISION_BF16 if bf16 else peers.TORCHVISION

    def precision():
        return (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    x = torch.from_numpy(synthetic_batch(batch, size)[0]).permute(0, 3, 1, 2)
    x = x.contiguous(memory_format=torch.channels_last)
    if not train:
        model.eval()

        def run():
            with torch.inference_mode(), precision():
                return model(x)

        return [Case(name, run, items=batch)]
    model.train()
    y = torch.from_numpy(synthetic_batch(batch, size)[1].astype("int64"))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with precision():
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return [Case(name, step, items=batch)]
