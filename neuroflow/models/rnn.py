"""A recurrent network that reads an image one row of pixels per time step."""

from __future__ import annotations

import torch
from torch import nn

from neuroflow.families import RNNConfig

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RNN(nn.Module):
    def __init__(self, config: RNNConfig, image_shape: tuple[int, int], num_classes: int):
        super().__init__()
        self.rnn = CELLS[config.cell](  # RNNConfig has checked the name
            input_size=image_shape[1],  # one row of pixels per step
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        width = config.hidden_size * (2 if config.bidirectional else 1)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, num_classes)

    def features(self, x):
        rows = x.squeeze(1)  # (B, 1, H, W) -> (B, H, W): H steps of W features
        outputs, _ = self.rnn(rows)  # (B, H, hidden * directions)
        if self.rnn.bidirectional:
            half = self.rnn.hidden_size
            # forward direction's last step, backward direction's first: both have read every row
            last = torch.cat([outputs[:, -1, :half], outputs[:, 0, half:]], dim=1)
            return self.dropout(last)  # (B, 2 * hidden)
        return self.dropout(outputs[:, -1])  # (B, hidden)

    def forward(self, x):
        return self.head(self.features(x))  # (B, C)
