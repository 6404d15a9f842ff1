"""The checked-in gRPC stubs are what grpcio-tools generates from proto/ppo/v1/ppo.proto."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "python/src/proxima_actor/_proto"


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is a dev dependency")
    args = [
        "protoc",
        f"-Iproxima_actor/_proto={ROOT / 'proto/ppo/v1'}",
        f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
        str(ROOT / "proto/ppo/v1/ppo.proto"),
    ]
    assert protoc.main(args) == 0
    for name in ("ppo_pb2.py", "ppo_pb2.pyi", "ppo_pb2_grpc.py"):
        fresh = (tmp_path / "proxima_actor/_proto" / name).read_text()
        assert fresh == (STUBS / name).read_text(), f"{name} is stale: regenerate it (see python/README.md)"
