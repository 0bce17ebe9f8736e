"""The optimisers and the one-cycle schedule both loops use, over torch's functional kernels.

torch.optim.adam.adam and torch.optim.sgd.sgd are the kernels torch.optim.AdamW, Adam and SGD
call, so the arithmetic is theirs, step for step (tests/test_training.py holds the two side by
side). What is left out is the class around them: building or stepping the first torch.optim
optimiser of a process imports torch._dynamo, 1-2 s of start-up on every training step, even
when nothing is compiled. On CUDA, AdamW and Adam use the fused kernel: one launch per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

KINDS = ("adamw", "adam", "sgd")
BETA2, EPS = 0.999, 1e-8  # torch.optim.Adam's defaults
# torch.optim.lr_scheduler.OneCycleLR's defaults: the lr starts at peak / 25 and ends at
# peak / 25 / 1e4; the momentum (beta1 for Adam) falls from 0.95 to 0.85 as the lr rises.
DIV, FINAL_DIV = 25.0, 1e4
MOMENTUM = (0.85, 0.95)


class Optimizer:
    """AdamW (decoupled weight decay), Adam (L2) or SGD (Nesterov, L2) over `params`. step()
    takes the lr and momentum of this step (beta1 for Adam), so a schedule is a plain function
    of `steps`, the steps taken; state_dict() is tensors and numbers, for checkpoints."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        kind: str,
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
    ):
        if kind not in KINDS:
            raise ValueError(f"optimizer {kind!r}; expected one of {', '.join(KINDS)}")
        self.params = [p for p in params if p.requires_grad]
        self.kind, self.lr, self.weight_decay, self.momentum = kind, lr, weight_decay, momentum
        # fused needs every parameter on one CUDA device; elsewhere torch picks its own kernel
        self.fused = kind != "sgd" and bool(self.params) and self.params[0].is_cuda
        self.steps = 0
        self.state = self._fresh_state()

    def _fresh_state(self) -> dict[str, list]:
        if self.kind == "sgd":
            return {"momentum_buffer": [None] * len(self.params)}
        zeros = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        return {
            "exp_avg": zeros,
            "exp_avg_sq": [torch.zeros_like(p) for p in self.params],
            "step": [torch.zeros((), device=self._device("step", p)) for p in self.params],
        }

    def _device(self, key: str, param: torch.Tensor) -> torch.device:
        """Where state `key` of `param` lives: with the parameter, but the step counts on the
        CPU unless the fused kernel reads them (as torch keeps them)."""
        return torch.device("cpu") if key == "step" and not self.fused else param.device

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float | None = None, momentum: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        momentum = self.momentum if momentum is None else momentum
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in index]
        grads = [p.grad for p in params]
        self.steps += 1
        if self.kind == "sgd":
            buffers = [self.state["momentum_buffer"][i] for i in index]
            sgd(
                params,
                grads,
                buffers,
                weight_decay=self.weight_decay,
                momentum=momentum,
                lr=lr,
                dampening=0.0,
                nesterov=True,
                maximize=False,
            )
            for i, buffer in zip(index, buffers, strict=True):  # sgd() fills the first ones
                self.state["momentum_buffer"][i] = buffer
            return
        state = {key: [values[i] for i in index] for key, values in self.state.items()}
        adam(
            params,
            grads,
            state["exp_avg"],
            state["exp_avg_sq"],
            [],
            state["step"],
            fused=self.fused or None,
            decoupled_weight_decay=self.kind == "adamw",
            amsgrad=False,
            beta1=momentum,
            beta2=BETA2,
            lr=lr,
            weight_decay=self.weight_decay,
            eps=EPS,
            maximize=False,
        )

    def state_dict(self) -> dict:
        return {"kind": self.kind, "steps": self.steps, **self.state}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"a {state.get('kind')} state; expected {self.kind}")
        self.steps = state["steps"]
        for key in self.state:
            self.state[key] = [
                None if saved is None else saved.to(self._device(key, p))
                for saved, p in zip(state[key], self.params, strict=True)
            ]


def one_cycle(step: int, total: int, peak: float, warmup: float) -> tuple[float, float]:
    """(lr, momentum) for step `step` (from 0) of `total`, as torch.optim.lr_scheduler.OneCycleLR
    gives them with max_lr=peak and pct_start=warmup: cosine from peak / 25 up to peak over the
    warm-up, then cosine down to peak / 25 / 1e4; the momentum runs the other way."""
    low, high = MOMENTUM
    rise_end = warmup * total - 1  # the step at the peak
    if step <= rise_end:
        share = step / rise_end
        return cosine(peak / DIV, peak, share), cosine(high, low, share)
    share = (step - rise_end) / (total - 1 - rise_end)
    return cosine(peak, peak / DIV / FINAL_DIV, share), cosine(low, high, share)


def cosine(start: float, end: float, share: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * share) + 1)
