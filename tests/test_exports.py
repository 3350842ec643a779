"""Exports are byte-for-byte what they were before the flows' blocks were scanned (stacked params).

A load + save of each TRELLIS fixture checkpoint gives back the fixture's safetensors bytes, and a
json whose sha256 is the one an export had before the change (the json holds every constructor
argument, so it is ours, not the fixture's text).
"""
import hashlib

import pytest

from conversion import trellis
from fixture_scan import TRELLIS_DIR

# sha256 of the json written by save_checkpoint(load_checkpoint(fixture)) at commit 0315d55 (before scan).
JSON_SHA256 = {
    "ss_flow": "d291990eb43826e4364a7fd3c3fc54ddea645a7a8a6251c6a837d9752106ddc6",
    "ss_flow_fp16": "a2da3f56ef092b19f77ee0ebb7c4bf9f80d617015ddd3e9e95eade76fbe94c30",
    "ss_flow_p2": "205f45fcdcc5b78de5b0f3d4504a14759e6d0191da3c5b35697ee4bfab23484d",
    "slat_flow": "c3fe8a89bf8d16871bc5ba83268dcaa9158efb7b62c1217b467a4386423a6d33",
    "ss_dec": "c68c1c4ec2f6ae74f2d02cb525fab161f8cce0a360eb64c35b1c212399029944",
    "mdt_student": "d291990eb43826e4364a7fd3c3fc54ddea645a7a8a6251c6a837d9752106ddc6",
}


@pytest.mark.parametrize("name", sorted(JSON_SHA256))
def test_load_and_save_gives_back_the_same_bytes(tmp_path, name):
  model, params = trellis.load_checkpoint(TRELLIS_DIR / name)
  trellis.save_checkpoint(tmp_path / name, model, params)
  assert (tmp_path / f"{name}.safetensors").read_bytes() == (TRELLIS_DIR / f"{name}.safetensors").read_bytes()
  assert hashlib.sha256((tmp_path / f"{name}.json").read_bytes()).hexdigest() == JSON_SHA256[name]
