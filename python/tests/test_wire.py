"""Gymnasium spaces as the protocol's ``Space`` messages."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from proxima_actor import wire


def test_spaces_become_their_messages() -> None:
    assert wire.space(gym.spaces.Discrete(4)).discrete.n == 4
    multi = wire.space(gym.spaces.MultiDiscrete([3, 1, 5]))
    assert multi.WhichOneof("kind") == "multi_discrete" and list(multi.multi_discrete.nvec) == [3, 1, 5]
    box = wire.space(gym.spaces.Box(np.array([-1.0, -np.inf]), np.array([2.0, np.inf]), dtype=np.float64))
    assert list(box.box.low) == [-1.0, -np.inf] and list(box.box.high) == [2.0, np.inf]


def test_spaces_the_protocol_has_no_message_for_are_errors() -> None:
    with pytest.raises(ValueError, match="1-d nvec"):
        wire.space(gym.spaces.MultiDiscrete([[2, 2], [3, 3]]))
    with pytest.raises(ValueError, match="neither Discrete, MultiDiscrete nor Box"):
        wire.space(gym.spaces.MultiBinary(3))
