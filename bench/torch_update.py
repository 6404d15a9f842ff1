"""The PPO update of `proxima-bench update` in PyTorch, for a side-by-side learner figure: the same synthetic
batch shape, minibatch, epochs, model (MLP, or the Nature / MinAtar CNN, separate or shared trunks, as
docs/model-spec.md describes them) and loss (clipped surrogate, normalised advantages, unclipped value loss with
coefficient 0.5, no entropy term, global grad-norm clip 0.5, Adam), on `--threads` torch threads. Prints one JSON
line with samples/s (rows).

With `--core lstm|gru` the model is the recurrent one of `proxima-bench update --core`: with `--shared-trunk`,
`network` (the MLP trunk on flat observations), then one `nn.LSTM` / `nn.GRU` layer of `--core-size` units
(`lstm` / `gru`), then the `actor` and `critic` heads on its output; without it, the actor and the critic each
get their own MLP trunk (`actor` / `critic`), core (`actor_lstm` / `critic_lstm`, or `_gru`) and Linear head
(`actor_head` / `critic_head`), so the value's gradient does not reach the policy's core. The batch is
`batch / seq_steps` sequences of `--seq-steps` steps, each with a random initial state per core (data, no
gradient) and episode starts at ~2% of its rows (never its first), shared by every core; a minibatch is
`minibatch / seq_steps` whole sequences, shuffled by sequence each epoch, time-major `[T, B, ...]`, and each core
runs step by step as CleanRL's `ppo_atari_lstm.py` does, multiplying the incoming state by `1 - start`.

    python bench/torch_update.py --preset minatar_cnn --obs-shape 10,10,4 --actions 6 --threads 2
    python bench/torch_update.py --core lstm --core-size 64 --hidden 64 --obs-dim 4 --actions 2 --seq-steps 32 \
        --minibatch 256 --batch 8192 --epochs 2 --threads 1 --shared-trunk
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

PRESETS = {
    "nature_cnn": ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], [512]),
    "minatar_cnn": ([(16, 3, 1)], [128]),
}


def trunk(
    obs_shape: list[int],
    conv: list[tuple[int, int, int]],
    hidden: list[int],
    out: int | None,
) -> nn.Module:
    """A Sequential of the convolutions (channels-last input permuted first), the flatten and the Linear layers."""
    layers: list[nn.Module] = []
    if conv:
        h, w, c = (
            obs_shape
            if obs_shape[-1] <= obs_shape[0]
            else (obs_shape[1], obs_shape[2], obs_shape[0])
        )
        for oc, k, s in conv:
            layers += [nn.Conv2d(c, oc, k, s), nn.ReLU()]
            c, h, w = oc, (h - k) // s + 1, (w - k) // s + 1
        layers.append(nn.Flatten())
        width = c * h * w
    else:
        width = math.prod(obs_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU() if conv else nn.Tanh()]
        width = size
    if out is not None:
        layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


class Agent(nn.Module):
    def __init__(
        self,
        obs_shape: list[int],
        conv: list,
        hidden: list[int],
        actions: int,
        shared: bool,
    ) -> None:
        super().__init__()
        self.obs_shape, self.channels_last = (
            obs_shape,
            bool(conv) and obs_shape[-1] <= obs_shape[0],
        )
        self.shared = shared
        if shared:
            self.network = trunk(obs_shape, conv, hidden, None)
            self.actor, self.critic = (
                nn.Linear(hidden[-1], actions),
                nn.Linear(hidden[-1], 1),
            )
        else:
            self.actor = trunk(obs_shape, conv, hidden, actions)
            self.critic = trunk(obs_shape, conv, hidden, 1)
        self.conv = bool(conv)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.conv:
            x = x.reshape(len(x), *self.obs_shape)
            if self.channels_last:
                x = x.permute(0, 3, 1, 2)
        if self.shared:
            f = self.network(x)
            return self.actor(f), self.critic(f).squeeze(1)
        return self.actor(x), self.critic(x).squeeze(1)


class RecurrentAgent(nn.Module):
    """The parameter names and shapes of the Rust recurrent model. Shared: `network` (the MLP trunk, the
    activation after every layer), one `lstm` or `gru` layer, `actor`, `critic`. Separate: for each of the actor
    and the critic a trunk (`actor`), a core (`actor_lstm` / `actor_gru`) and a head (`actor_head`)."""

    def __init__(
        self,
        obs_dim: int,
        hidden: list[int],
        actions: int,
        core: str,
        core_size: int,
        shared: bool,
    ) -> None:
        super().__init__()
        self.core, self.shared = core, shared
        cell = nn.LSTM if core == "lstm" else nn.GRU
        if shared:
            self.network = trunk([obs_dim], [], hidden, None)
            self.add_module(core, cell(hidden[-1], core_size))
            self.actor = nn.Linear(core_size, actions)
            self.critic = nn.Linear(core_size, 1)
        else:
            for name, out in (("actor", actions), ("critic", 1)):
                self.add_module(name, trunk([obs_dim], [], hidden, None))
                self.add_module(f"{name}_{core}", cell(hidden[-1], core_size))
                self.add_module(f"{name}_head", nn.Linear(core_size, out))

    @property
    def cores(self) -> int:
        """How many cores (initial states) the model has: 1 shared, 2 separate (the actor's, then the critic's)."""
        return 1 if self.shared else 2

    def unroll(
        self,
        body: nn.Module,
        cell: nn.Module,
        x: torch.Tensor,
        state: tuple[torch.Tensor, ...],
        starts: torch.Tensor,
    ) -> torch.Tensor:
        """`body` then `cell` over `x`, one core call per step on `(1 - starts[t]) * state`; the outputs
        `[T * B, H]`."""
        steps, envs = starts.shape
        features = body(x).reshape(steps, envs, -1)
        out = []
        for t in range(steps):
            keep = (1.0 - starts[t]).view(1, -1, 1)
            kept = tuple(keep * s for s in state)
            h, new = cell(features[t : t + 1], kept if self.core == "lstm" else kept[0])
            state = new if self.core == "lstm" else (new,)
            out.append(h)
        return torch.cat(out).flatten(0, 1)

    def forward(
        self,
        x: torch.Tensor,
        states: tuple[tuple[torch.Tensor, ...], ...],
        starts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`x` `[T * B, obs_dim]` and `starts` `[T, B]` time-major, `states` one initial state per core (`cores`),
        each `(h, c)` (LSTM) or `(h,)` (GRU) of `[1, B, H]` tensors."""
        if self.shared:
            h = self.unroll(
                self.network, self.get_submodule(self.core), x, states[0], starts
            )
            return self.actor(h), self.critic(h).squeeze(1)
        heads = []
        for name, state in zip(("actor", "critic"), states, strict=True):
            cell = self.get_submodule(f"{name}_{self.core}")
            h = self.unroll(self.get_submodule(name), cell, x, state, starts)
            heads.append(self.get_submodule(f"{name}_head")(h))
        logits, value = heads
        return logits, value.squeeze(1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--obs-shape", "--obs-dim", dest="obs_shape", default="4")
    p.add_argument("--hidden", default="64,64")
    p.add_argument("--actions", type=int, default=2)
    p.add_argument("--shared-trunk", action="store_true")
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--minibatch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=0.0)
    p.add_argument("--core", choices=["none", "lstm", "gru"], default="none")
    p.add_argument("--core-size", type=int, default=64)
    p.add_argument("--seq-steps", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.device != "cpu":
        # Every tensor and parameter below is created on this device (not set for the CPU: the mode behind it
        # intercepts every torch call, a cost the CPU baseline should not carry).
        torch.set_default_device(a.device)
    torch.manual_seed(1)
    obs_shape = [int(v) for v in a.obs_shape.split(",")]
    conv, hidden = (
        PRESETS[a.preset] if a.preset else ([], [int(v) for v in a.hidden.split(",")])
    )
    n, steps = max(a.batch, a.minibatch), a.seq_steps
    agent: nn.Module
    if a.core != "none":
        if a.preset or len(obs_shape) != 1:
            p.error(
                "--core takes flat observations (--obs-dim) and an MLP trunk, not a conv preset"
            )
        if steps < 1 or n % steps or a.minibatch % steps:
            p.error("--batch and --minibatch must be multiples of --seq-steps")
        agent = RecurrentAgent(
            obs_shape[0], hidden, a.actions, a.core, a.core_size, a.shared_trunk
        )
    else:
        agent = Agent(obs_shape, conv, hidden, a.actions, a.shared_trunk)
    opt = torch.optim.Adam(agent.parameters(), lr=1e-4, eps=1e-5)

    def step(
        logits: torch.Tensor,
        value: torch.Tensor,
        actions: torch.Tensor,
        old_logp: torch.Tensor,
        mb_adv: torch.Tensor,
        ret: torch.Tensor,
    ) -> None:
        """One gradient step on a minibatch's heads and values (rows) and its samples."""
        logp = torch.distributions.Categorical(logits=logits).log_prob(actions)
        ratio = (logp - old_logp).exp()
        mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
        pg = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(0.8, 1.2)).mean()
        loss = pg + 0.5 * 0.5 * ((value - ret) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
        opt.step()

    if isinstance(agent, RecurrentAgent):
        # Time-major [T, S, ...]: row t * S + j is step t of sequence j.
        envs = n // steps
        obs = torch.randn(steps, envs, obs_shape[0])
        actions = (torch.arange(n) % a.actions).reshape(steps, envs)
        old_logp = torch.full((steps, envs), -math.log(a.actions))
        adv, ret = torch.randn(steps, envs), torch.randn(steps, envs)
        # One random initial state per core: the shared core's, or the actor's then the critic's.
        states = tuple(
            tuple(
                torch.rand(1, envs, a.core_size) - 0.5
                for _ in range(2 if a.core == "lstm" else 1)
            )
            for _ in range(agent.cores)
        )
        starts = (torch.rand(steps, envs) < 0.02).float()
        starts[0] = 0.0
        recurrent = agent

        def epoch() -> None:
            for idx in torch.randperm(envs).split(a.minibatch // steps):
                logits, value = recurrent(
                    obs[:, idx].flatten(0, 1),
                    tuple(tuple(s[:, idx] for s in state) for state in states),
                    starts[:, idx],
                )
                step(
                    logits,
                    value,
                    actions[:, idx].flatten(),
                    old_logp[:, idx].flatten(),
                    adv[:, idx].flatten(),
                    ret[:, idx].flatten(),
                )

    else:
        obs = torch.randn(n, math.prod(obs_shape))
        actions = torch.arange(n) % a.actions
        old_logp = torch.full((n,), -math.log(a.actions))
        adv, ret = torch.randn(n), torch.randn(n)

        def epoch() -> None:
            for idx in torch.randperm(n).split(a.minibatch):
                logits, value = agent(obs[idx])
                step(logits, value, actions[idx], old_logp[idx], adv[idx], ret[idx])

    def sync() -> None:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    epoch()  # warm-up
    sync()
    started, epochs = time.perf_counter(), 0
    while True:
        for _ in range(a.epochs):
            epoch()
        epochs += a.epochs
        sync()
        if time.perf_counter() - started >= a.min_seconds:
            break
    seconds = time.perf_counter() - started
    params = sum(t.numel() for t in agent.parameters())
    core = a.core != "none"
    print(
        json.dumps(
            {
                "workload": "torch_update",
                "torch": torch.__version__,
                "device": a.device,
                "threads": a.threads,
                "parameters": params,
                "batch": n,
                "minibatch": a.minibatch,
                "epochs": epochs,
                "seconds": seconds,
                "samples_per_s": epochs * n / seconds,
                "shared_trunk": a.shared_trunk,
                "core": a.core,
                "core_size": a.core_size if core else None,
                "seq_steps": a.seq_steps if core else None,
            }
        )
    )


if __name__ == "__main__":
    main()
