"""Gymnasium spaces as the protocol's ``Space`` messages."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from proxima_actor import wire
from proxima_actor._proto import ppo_pb2 as pb


def test_spaces_become_their_messages() -> None:
    assert wire.space(gym.spaces.Discrete(4)).discrete.n == 4
    multi = wire.space(gym.spaces.MultiDiscrete([3, 1, 5]))
    assert multi.WhichOneof("kind") == "multi_discrete" and list(multi.multi_discrete.nvec) == [3, 1, 5]
    box = wire.space(gym.spaces.Box(np.array([-1.0, -np.inf]), np.array([2.0, np.inf]), dtype=np.float64))
    assert list(box.box.low) == [-1.0, -np.inf] and list(box.box.high) == [2.0, np.inf]
    assert (list(box.box.shape), box.box.dtype) == ([2], pb.DTYPE_FLOAT32)


def test_boxes_keep_their_shape_and_travel_as_float32_or_uint8() -> None:
    image = wire.space(gym.spaces.Box(0, 255, (6, 6, 1), np.uint8)).box
    assert (list(image.shape), image.dtype) == ([6, 6, 1], pb.DTYPE_UINT8)
    assert list(image.low) == [0.0] * 36 and list(image.high) == [255.0] * 36
    planes = wire.space(gym.spaces.Box(0, 1, (10, 10, 4), bool)).box
    assert (list(planes.shape), planes.dtype) == ([10, 10, 4], pb.DTYPE_UINT8)
    assert list(planes.low) == [0.0] * 400 and list(planes.high) == [1.0] * 400
    low = np.arange(6, dtype=np.float64).reshape(2, 3)
    grid = wire.space(gym.spaces.Box(low, low + 10.0, dtype=np.float64)).box
    assert (list(grid.shape), grid.dtype) == ([2, 3], pb.DTYPE_FLOAT32)
    assert list(grid.low) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and list(grid.high) == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    counts = wire.space(gym.spaces.Box(0, 9, (3,), np.int64)).box
    assert (list(counts.shape), counts.dtype, list(counts.high)) == ([3], pb.DTYPE_FLOAT32, [9.0] * 3)


def test_spaces_the_protocol_has_no_message_for_are_errors() -> None:
    with pytest.raises(ValueError, match="1-d nvec"):
        wire.space(gym.spaces.MultiDiscrete([[2, 2], [3, 3]]))
    with pytest.raises(ValueError, match="neither Discrete, MultiDiscrete nor Box"):
        wire.space(gym.spaces.MultiBinary(3))
