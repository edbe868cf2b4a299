"""The gated MLP of 4M's SwiGLU blocks: ``fc2(act(fc1 x) * fc3 x)``.

Shapes: (..., D) in and out, H hidden units. The hidden width is two thirds of the MLP width a
plain block of the same ``mlp_ratio`` would have (``H = int(2 * hidden_features / 3)``: 2048 for
D = 768 and ratio 4), which keeps the parameter count of a plain MLP. Parameter names (``fc1`` the
gate, ``fc3`` the value, ``fc2`` the output) are the official 4M ones. Fits timm's ``Block`` as its
``mlp_layer``.
"""

from __future__ import annotations

from torch import Tensor, nn


class GatedMlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int | None = None, act_layer: type[nn.Module] = nn.SiLU,
                 norm_layer: type[nn.Module] | None = None, bias: bool = True, drop: float = 0.0,
                 **unused: object) -> None:
        super().__init__()
        hidden = int(2 * (hidden_features or 4 * in_features) / 3)
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.fc3 = nn.Linear(in_features, hidden, bias=bias)
        self.act = act_layer()
        self.norm = norm_layer(hidden) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden, in_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.norm(self.act(self.fc1(x)) * self.fc3(x))))
