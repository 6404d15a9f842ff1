from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_1: _ClassVar[ProtocolVersion]

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_FLOAT32: _ClassVar[Dtype]
    DTYPE_UINT8: _ClassVar[Dtype]

class RolloutOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_OUTCOME_UNSPECIFIED: _ClassVar[RolloutOutcome]
    ROLLOUT_OUTCOME_ACCEPTED: _ClassVar[RolloutOutcome]
    ROLLOUT_OUTCOME_STALE: _ClassVar[RolloutOutcome]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_1: ProtocolVersion
DTYPE_FLOAT32: Dtype
DTYPE_UINT8: Dtype
ROLLOUT_OUTCOME_UNSPECIFIED: RolloutOutcome
ROLLOUT_OUTCOME_ACCEPTED: RolloutOutcome
ROLLOUT_OUTCOME_STALE: RolloutOutcome

class Space(_message.Message):
    __slots__ = ("discrete", "box", "multi_discrete")
    DISCRETE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    MULTI_DISCRETE_FIELD_NUMBER: _ClassVar[int]
    discrete: Discrete
    box: BoxSpace
    multi_discrete: MultiDiscrete
    def __init__(self, discrete: _Optional[_Union[Discrete, _Mapping]] = ..., box: _Optional[_Union[BoxSpace, _Mapping]] = ..., multi_discrete: _Optional[_Union[MultiDiscrete, _Mapping]] = ...) -> None: ...

class Discrete(_message.Message):
    __slots__ = ("n",)
    N_FIELD_NUMBER: _ClassVar[int]
    n: int
    def __init__(self, n: _Optional[int] = ...) -> None: ...

class MultiDiscrete(_message.Message):
    __slots__ = ("nvec",)
    NVEC_FIELD_NUMBER: _ClassVar[int]
    nvec: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, nvec: _Optional[_Iterable[int]] = ...) -> None: ...

class BoxSpace(_message.Message):
    __slots__ = ("low", "high", "shape", "dtype")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    low: _containers.RepeatedScalarFieldContainer[float]
    high: _containers.RepeatedScalarFieldContainer[float]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: Dtype
    def __init__(self, low: _Optional[_Iterable[float]] = ..., high: _Optional[_Iterable[float]] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("actor_name", "env_id", "observation_space", "action_space", "num_envs", "protocol_version", "learner_num_envs")
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SPACE_FIELD_NUMBER: _ClassVar[int]
    ACTION_SPACE_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEARNER_NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    actor_name: str
    env_id: str
    observation_space: Space
    action_space: Space
    num_envs: int
    protocol_version: ProtocolVersion
    learner_num_envs: bool
    def __init__(self, actor_name: _Optional[str] = ..., env_id: _Optional[str] = ..., observation_space: _Optional[_Union[Space, _Mapping]] = ..., action_space: _Optional[_Union[Space, _Mapping]] = ..., num_envs: _Optional[int] = ..., protocol_version: _Optional[_Union[ProtocolVersion, str]] = ..., learner_num_envs: _Optional[bool] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("actor_id", "seed", "run_id", "policy_version", "hidden_sizes", "rollout_steps", "incarnation", "num_envs", "max_message_bytes")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZES_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_STEPS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    actor_id: int
    seed: int
    run_id: str
    policy_version: int
    hidden_sizes: _containers.RepeatedScalarFieldContainer[int]
    rollout_steps: int
    incarnation: int
    num_envs: int
    max_message_bytes: int
    def __init__(self, actor_id: _Optional[int] = ..., seed: _Optional[int] = ..., run_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., hidden_sizes: _Optional[_Iterable[int]] = ..., rollout_steps: _Optional[int] = ..., incarnation: _Optional[int] = ..., num_envs: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("actor_id", "policy_version", "num_steps", "num_envs", "obs", "actions", "log_probs", "values", "rewards", "terminated", "truncated", "final_obs", "next_obs", "episodes", "incarnation", "initial_state")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    OBS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    LOG_PROBS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    FINAL_OBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBS_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    INITIAL_STATE_FIELD_NUMBER: _ClassVar[int]
    actor_id: int
    policy_version: int
    num_steps: int
    num_envs: int
    obs: bytes
    actions: bytes
    log_probs: bytes
    values: bytes
    rewards: bytes
    terminated: bytes
    truncated: bytes
    final_obs: bytes
    next_obs: bytes
    episodes: _containers.RepeatedCompositeFieldContainer[Episode]
    incarnation: int
    initial_state: bytes
    def __init__(self, actor_id: _Optional[int] = ..., policy_version: _Optional[int] = ..., num_steps: _Optional[int] = ..., num_envs: _Optional[int] = ..., obs: _Optional[bytes] = ..., actions: _Optional[bytes] = ..., log_probs: _Optional[bytes] = ..., values: _Optional[bytes] = ..., rewards: _Optional[bytes] = ..., terminated: _Optional[bytes] = ..., truncated: _Optional[bytes] = ..., final_obs: _Optional[bytes] = ..., next_obs: _Optional[bytes] = ..., episodes: _Optional[_Iterable[_Union[Episode, _Mapping]]] = ..., incarnation: _Optional[int] = ..., initial_state: _Optional[bytes] = ...) -> None: ...

class Episode(_message.Message):
    __slots__ = ("env_index", "episode_return", "length")
    ENV_INDEX_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    env_index: int
    episode_return: float
    length: int
    def __init__(self, env_index: _Optional[int] = ..., episode_return: _Optional[float] = ..., length: _Optional[int] = ...) -> None: ...

class SubmitRolloutResponse(_message.Message):
    __slots__ = ("outcome", "policy_version")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    outcome: RolloutOutcome
    policy_version: int
    def __init__(self, outcome: _Optional[_Union[RolloutOutcome, str]] = ..., policy_version: _Optional[int] = ...) -> None: ...

class SubscribePolicyRequest(_message.Message):
    __slots__ = ("actor_id",)
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    actor_id: int
    def __init__(self, actor_id: _Optional[int] = ...) -> None: ...

class PolicyUpdate(_message.Message):
    __slots__ = ("version", "weights", "published_at", "incarnation")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    version: int
    weights: bytes
    published_at: float
    incarnation: int
    def __init__(self, version: _Optional[int] = ..., weights: _Optional[bytes] = ..., published_at: _Optional[float] = ..., incarnation: _Optional[int] = ...) -> None: ...
