"""A recurrent network that reads an image one row of pixels per time step: the row's W
values, or in colour its C*W values (each channel's row in turn)."""

from __future__ import annotations

import torch
from torch import nn

from neuroflow.families import RNNConfig
from neuroflow.models.classifier import chw

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RNN(nn.Module):
    def __init__(self, config: RNNConfig, image_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels, _, width = chw(image_shape)
        self.rnn = CELLS[config.cell](  # RNNConfig has checked the name
            input_size=channels * width,  # one row of pixels per step
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
        # (B, C, H, W) -> (B, H, C*W): H steps of C*W features
        rows = x.permute(0, 2, 1, 3).flatten(2)
        outputs, _ = self.rnn(rows)  # (B, H, hidden * directions)
        if self.rnn.bidirectional:
            half = self.rnn.hidden_size
            # forward direction's last step, backward direction's first: both have read every row
            last = torch.cat([outputs[:, -1, :half], outputs[:, 0, half:]], dim=1)
            return self.dropout(last)  # (B, 2 * hidden)
        return self.dropout(outputs[:, -1])  # (B, hidden)

    def forward(self, x):
        return self.head(self.features(x))  # (B, C)
