"""The reference: the training loop of pytorch/examples `mnist/main.py`, re-implemented
faithfully, so this project's speed is measured against the loop most people start from.

As in the example: a per-item Dataset that turns each uint8 image into a PIL image and runs the
torchvision transform (ToTensor, Normalize((0.1307,), (0.3081,))) on it; a DataLoader with batch
64 (on CUDA also num_workers=1, pin_memory and shuffle; on the CPU neither, as the example);
the conv32-conv64-fc128 network with dropout 0.25 and 0.5 and log_softmax; NLL loss; Adadelta
with lr 1.0 and StepLR(step_size=1, gamma=0.7); 14 epochs; the loss read every 10 batches for
the progress line; seed 1. The test split is scored with batch 1000, where the caller asks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

EPOCHS = 14
BATCH = 64
TEST_BATCH = 1000
LR = 1.0
GAMMA = 0.7
SEED = 1
LOG_INTERVAL = 10


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


class ImageDataset(torch.utils.data.Dataset):
    """(N, 28, 28) uint8 images served one at a time, as torchvision's MNIST serves them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index], mode="L")
        return self.transform(image), int(self.labels[index])


def loaders(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], device):
    from torchvision import transforms

    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    train_kwargs, test_kwargs = {"batch_size": BATCH}, {"batch_size": TEST_BATCH}
    if device.type == "cuda":
        cuda_kwargs = {"num_workers": 1, "pin_memory": True, "shuffle": True}
        train_kwargs.update(cuda_kwargs)
        test_kwargs.update(cuda_kwargs)
    return (
        torch.utils.data.DataLoader(ImageDataset(*train, transform), **train_kwargs),
        torch.utils.data.DataLoader(ImageDataset(*test, transform), **test_kwargs),
    )


def train_epoch(model, device, loader, optimizer, on_step: StepEnd | None = None) -> int:
    model.train()
    seen = 0
    for batch_idx, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        seen += len(target)
        if batch_idx % LOG_INTERVAL == 0:
            loss.item()  # the example prints it here
        if on_step:
            on_step(model)
    return seen


@torch.no_grad()
def test_accuracy(model, device, loader) -> float:
    model.eval()
    correct = 0
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        correct += model(data).argmax(dim=1).eq(target).sum().item()
    return correct / len(loader.dataset)


StepEnd = Callable[[nn.Module], None]  # after each optimizer step
EpochEnd = Callable[[nn.Module, int], None]  # (model, epoch) after each epoch


def train(
    train_split,
    test_split,
    device,
    epochs: int = EPOCHS,
    on_epoch: EpochEnd | None = None,
    on_step: StepEnd | None = None,
    model: nn.Module | None = None,
    seed: int = SEED,
):
    """Train as the example does, from `seed`. `model` (by default Net) takes the normalised
    (B, 1, 28, 28) batches and returns log-probabilities. The caller keeps the clock and scores
    the test split where it likes, from on_step and on_epoch; returns (model, test loader)."""
    torch.manual_seed(seed)
    train_loader, test_loader = loaders(train_split, test_split, device)
    model = (model or Net()).to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=GAMMA)
    for epoch in range(1, epochs + 1):
        train_epoch(model, device, train_loader, optimizer, on_step)
        if on_epoch:
            on_epoch(model, epoch)
        scheduler.step()
    return model, test_loader


def main() -> None:
    """python benchmarks/reference.py BENCH.npz: what a user of the example runs, from a cold
    start, training until the test split reaches 98% (scored after each epoch, as the
    example does), then stopping."""
    data = np.load(sys.argv[1])
    train_split = (data["train_images"], data["train_labels"])
    test_split = (data["test_images"], data["test_labels"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loader = loaders(train_split, test_split, device)[1]

    def stop_at_target(model, epoch):
        accuracy = test_accuracy(model, device, loader)
        print(f"epoch {epoch}: test accuracy {accuracy:.4f}", flush=True)
        if accuracy >= 0.98:
            raise SystemExit(0)

    train(train_split, test_split, device, on_epoch=stop_at_target)
    raise SystemExit(1)  # 14 epochs and never 98%


if __name__ == "__main__":
    main()
