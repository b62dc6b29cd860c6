"""The IMPALA agent: an observation encoder, a recurrent core from the layer registry, and the policy
and baseline heads (Espeholt et al. 2018; the fast-weight cores of Irie et al. 2021).

* Encoders: ``deep`` (the IMPALA ResNet: 16/32/32 channels, each a 3x3 conv, a 3x3 max-pool of stride 2
  and two residual blocks, then ReLU and FC 256), ``shallow`` (the Nature-DQN convolutions 32-8/4,
  64-4/2, 64-3/1, then FC 256 instead of DQN's 512 so both encoders feed the core the same width), and
  ``mlp`` (one hidden layer, for vector observations such as the memory environment). Frames are
  ``uint8 [C, 84, 84]`` and are scaled to [0, 1].
* Core input: the encoder's features and the clipped reward of the last step (256 + 1 = 257).
* Cores: ``lstm`` (a projection 257 -> 256, then the registry's LSTM layer of width 256, forget-gate
  bias 1, the baseline), any fast-weight layer name (``rdn``, ``delta-rnn``, ``deltanet``, ``lt``, ...: a projection
  257 -> 128, then 2 pre-LN blocks of (FWP layer, 4 heads x 32) + FF 512, the sequence models'
  :class:`~fastweights.models.blocks.BlockStack`, then LN), and ``ff`` (two ReLU layers, no state: the
  memoryless control). ``layer_options`` go to the core's layer (e.g. the DeltaNet's ``feature_map``).

``agent.step(obs, reward, first, state)`` runs one step ``[B, ...]`` (the actors);
``agent.unroll(obs, reward, first, state)`` runs ``[T, B, ...]`` with gradients through the whole
unroll, fast weights included (the learner). ``first[t]`` marks the first observation of an episode:
the rows it marks are reset to a fresh state before that step, so an unroll may cross episode ends.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import build_layer, layer_names
from ..layers.state import map_state, reset_state
from .blocks import BlockStack

ENCODERS = ("deep", "shallow", "mlp")
INITS = ("torch", "orthogonal")
FEEDFORWARD_CORE = "ff"


def core_names() -> list[str]:
    """Every core name: the registry's recurrent layers (not the transformer, whose cache grows without
    bound in an agent) and the memoryless ``ff``."""
    return [n for n in layer_names() if n != "transformer"] + [FEEDFORWARD_CORE]


# ------------------------------------------------------------------------------------------ encoders

def _frames(x: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> float in [0, 1], channels-last (about 1.5x faster convolutions on CPU). The bytes
    are reordered before the conversion, and the division is in place: one pass over the float frames
    instead of three (the same values as ``(x.float() / 255).contiguous(channels_last)``)."""
    return x.contiguous(memory_format=torch.channels_last).float().div_(255.0)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class ImpalaEncoder(nn.Module):
    """The deep IMPALA ResNet: ``[N, C, 84, 84]`` uint8 -> ``[N, features]``."""

    def __init__(self, in_channels: int, features: int = 256, channels=(16, 32, 32), size: int = 84):
        super().__init__()
        layers = []
        for c in channels:
            layers += [nn.Conv2d(in_channels, c, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1),
                       ResidualBlock(c), ResidualBlock(c)]
            in_channels = c
            size = (size + 1) // 2
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels * size * size, features)

    def forward(self, x):
        x = self.body(_frames(x))
        return F.relu(self.fc(F.relu(x).flatten(1)))


class NatureEncoder(nn.Module):
    """The Nature-DQN convolutions: ``[N, C, 84, 84]`` uint8 -> ``[N, features]``."""

    def __init__(self, in_channels: int, features: int = 256):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
                                  nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, stride=1), nn.ReLU())
        self.fc = nn.Linear(64 * 7 * 7, features)

    def forward(self, x):
        return F.relu(self.fc(self.body(_frames(x)).flatten(1)))


class MLPEncoder(nn.Module):
    """Vector observations ``[N, D]`` -> ``[N, features]`` (one ReLU layer)."""

    def __init__(self, in_dim: int, features: int = 256):
        super().__init__()
        self.fc = nn.Linear(in_dim, features)

    def forward(self, x):
        return F.relu(self.fc(x.float()))


# ------------------------------------------------------------------------------------------ cores

class Core(nn.Module):
    """``core(x [B, T, in_dim], state, done=None) -> (y [B, T, out_dim], state)``; a zero state is a fresh
    start, and ``done`` ([B] bool) resets those rows before this call."""

    def __init__(self, name: str, in_dim: int, d_model: int | None = None, num_layers: int = 2,
                 num_heads: int = 4, d_ff: int | None = None, layer_options: dict | None = None):
        super().__init__()
        if name not in core_names():
            raise ValueError(f"core must be one of {core_names()}, got {name!r}")
        if name == FEEDFORWARD_CORE and layer_options:
            raise ValueError(f"layer_options: core {name!r} has no layer to take them, got {layer_options!r}")
        self.name = name
        if name == "lstm":
            d_model = d_model or 256
            self.proj = nn.Linear(in_dim, d_model)
            self.lstm = build_layer("lstm", d_model=d_model, num_heads=1, **(layer_options or {}))
            with torch.no_grad():  # forget-gate bias 1 (Jozefowicz et al. 2015): remember by default
                self.lstm.lstm.bias_ih_l0[d_model:2 * d_model].fill_(1.0)
                self.lstm.lstm.bias_hh_l0[d_model:2 * d_model].zero_()
        elif name == FEEDFORWARD_CORE:
            d_model = d_model or 256
            self.proj = nn.Linear(in_dim, d_model)
            self.hidden = nn.Linear(d_model, d_model)
        else:
            d_model = d_model or 128
            self.proj = nn.Linear(in_dim, d_model)
            self.blocks = BlockStack(name, d_model, num_layers, num_heads, d_ff, layer_options=layer_options)
            self.norm = nn.LayerNorm(d_model)
        self.out_dim = d_model

    def forward(self, x, state=None, done=None):
        if self.name == FEEDFORWARD_CORE:
            return F.relu(self.hidden(F.relu(self.proj(x)))), ()
        if done is not None:
            state = reset_state(state, done)
        x = self.proj(x)
        if self.name == "lstm":
            return self.lstm(x, state)
        x, state = self.blocks(x, state)
        return self.norm(x), state


# ------------------------------------------------------------------------------------------ agent

class Agent(nn.Module):
    """Encoder -> [features, clipped reward] -> core -> policy logits and baseline value."""

    def __init__(self, obs_shape: tuple, num_actions: int, encoder: str = "deep", core: str = "rdn",
                 features: int = 256, core_dim: int | None = None, core_layers: int = 2, core_heads: int = 4,
                 core_ff: int | None = None, init: str = "torch", layer_options: dict | None = None):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {list(ENCODERS)}, got {encoder!r}")
        self.obs_shape, self.num_actions = tuple(obs_shape), int(num_actions)
        if encoder == "mlp":
            if len(self.obs_shape) != 1:
                raise ValueError(f"encoder 'mlp' needs vector observations, got shape {self.obs_shape}")
            self.encoder = MLPEncoder(self.obs_shape[0], features)
        else:
            if len(self.obs_shape) != 3 or self.obs_shape[1:] != (84, 84):
                raise ValueError(f"encoder {encoder!r} needs [C, 84, 84] frames, got shape {self.obs_shape}")
            cls = ImpalaEncoder if encoder == "deep" else NatureEncoder
            self.encoder = cls(self.obs_shape[0], features)
        self.core = Core(core, features + 1, core_dim, core_layers, core_heads, core_ff, layer_options)
        self.policy = nn.Linear(self.core.out_dim, num_actions)
        self.baseline = nn.Linear(self.core.out_dim, 1)
        if init == "orthogonal":
            self._orthogonal_init()

    def _orthogonal_init(self) -> None:
        """The A2C/PPO initialisation (Andrychowicz et al. 2021, "What matters in on-policy RL"): encoder
        convolutions and linears orthogonal with the ReLU gain sqrt(2), the policy head with gain 0.01 (a
        near-uniform first policy), the baseline head with gain 1, all biases 0. The core keeps its own."""
        for module in self.encoder.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(module.weight, gain=nn.init.calculate_gain("relu"))
                nn.init.zeros_(module.bias)
        for head, gain in ((self.policy, 0.01), (self.baseline, 1.0)):
            nn.init.orthogonal_(head.weight, gain=gain)
            nn.init.zeros_(head.bias)

    def initial_state(self, batch_size: int):
        """A zero (fresh) core state for ``batch_size`` rows (a tuple of tensors, batch first)."""
        with torch.no_grad():
            x = torch.zeros(batch_size, 1, self.encoder_out_dim() + 1)
            _, state = self.core(x, None)
        return map_state(state, torch.zeros_like)

    def encoder_out_dim(self) -> int:
        return self.core.proj.in_features - 1

    def _core_input(self, obs, reward):
        lead = obs.shape[:len(obs.shape) - len(self.obs_shape)]
        feats = self.encoder(obs.reshape(-1, *self.obs_shape)).view(*lead, -1)
        return torch.cat([feats, reward.to(feats.dtype).unsqueeze(-1)], dim=-1)

    def step(self, obs, reward, first, state):
        """One step of a batch: obs ``[B, ...]``, reward ``[B]`` (clipped reward of the last step), first
        ``[B]`` bool -> ``(logits [B, A], value [B], new_state)``."""
        x = self._core_input(obs, reward)[:, None]  # [B, 1, in]
        y, state = self.core(x, state, done=first)
        y = y[:, 0]
        return self.policy(y), self.baseline(y).squeeze(-1), state

    def unroll(self, obs, reward, first, state):
        """``[T, B, ...]`` -> ``(logits [T, B, A], values [T, B], final_state)``.

        The encoder runs on all T x B observations at once; the core runs over time from ``state``,
        resetting the rows that ``first`` marks before their step. Between resets the core is called on
        whole segments (the layers give the same outputs on a segment as step by step), so an unroll
        without episode ends is one call. Gradients flow through the whole unroll, fast weights included."""
        T = obs.shape[0]
        x = self._core_input(obs, reward).transpose(0, 1)  # [B, T, in]
        cuts = [0] + [t for t in range(1, T) if bool(first[t].any())] + [T]
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            y, state = self.core(x[:, a:b], state, done=first[a])
            outs.append(y)
        y = torch.cat(outs, dim=1).transpose(0, 1)  # [T, B, out]
        return self.policy(y), self.baseline(y).squeeze(-1), state
