"""The reference: the training loop of pytorch/examples `mnist/main.py`, re-implemented
faithfully, so this project's speed is measured against the loop most people start from.

As in the example: a per-item Dataset that turns each uint8 image into a PIL image and runs the
torchvision transform (ToTensor, Normalize((0.1307,), (0.3081,))) on it; a DataLoader with batch
64 (on CUDA also num_workers=1, pin_memory and shuffle; on the CPU neither, as the example);
the conv32-conv64-fc128 network with dropout 0.25 and 0.5 and log_softmax; NLL loss; Adadelta
with lr 1.0 and StepLR(step_size=1, gamma=0.7); 14 epochs; the loss read every 10 batches for
the progress line; seed 1. The test split is scored after every epoch, with batch 1000.
"""

from __future__ import annotations

import time
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


def train_epoch(model, device, loader, optimizer) -> int:
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
    return seen


@torch.no_grad()
def test_accuracy(model, device, loader) -> float:
    model.eval()
    correct = 0
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        correct += model(data).argmax(dim=1).eq(target).sum().item()
    return correct / len(loader.dataset)


EpochEnd = Callable[[int, float, float, int], None]  # (epoch, train s, test accuracy, images)


def train(train_split, test_split, device, epochs: int = EPOCHS, on_epoch: EpochEnd | None = None):
    """Train as the example does, scoring the test split after each epoch. The clock covers
    building the loaders, the model and every training epoch, and stops while testing."""
    torch.manual_seed(SEED)
    start = time.perf_counter()
    train_loader, test_loader = loaders(train_split, test_split, device)
    model = Net().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=GAMMA)
    training = 0.0
    for epoch in range(1, epochs + 1):
        seen = train_epoch(model, device, train_loader, optimizer)
        if device.type == "cuda":
            torch.cuda.synchronize()
        training += time.perf_counter() - start
        accuracy = test_accuracy(model, device, test_loader)  # not on the clock
        if on_epoch:
            on_epoch(epoch, training, accuracy, seen)
        scheduler.step()
        start = time.perf_counter()
    return model
