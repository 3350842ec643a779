"""TRELLIS-layout builders end to end on a tiny written root: records, filters, bad data, inputs."""
import glob
import os

import numpy as np
import pytest

from mdt_jax.data import pipeline, sparse_batch, trellis_builder, trellis_inputs, trellis_layout
from mdt_jax.data import trellis_testing as tt

MODELS = {"ss": tt.SS_MODEL, "slat": tt.SLAT_MODEL}


def build(root, data_dir, stage, **options):
  config = trellis_builder.trellis_config(root, stage, MODELS[stage], **options)
  builder = trellis_builder.TrellisLatents(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(file_format="array_record")
  return builder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("trellis_root"))
  return path, tt.write_tiny_trellis_dataset(path)


@pytest.fixture(scope="module")
def skipped(root, tmp_path_factory):
  """Both stages built from the root with every defect, skipping bad data."""
  path, _ = root
  data_dir = tmp_path_factory.mktemp("trellis_data")
  return {stage: build(path, data_dir, stage, on_bad_data="skip", max_num_voxels=80)
          for stage in MODELS}


def sha256s(builder):
  source = builder.as_data_source()["train"]
  return [source[i]["sha256"].decode() for i in range(len(source))]


def broken_for(stage):
  return {k: v for k, v in tt.BROKEN.items() if v[0] in (stage, "both")}


@pytest.mark.parametrize("kind", sorted(tt.BROKEN))
def test_bad_data_names_instance_and_file(tmp_path, kind):
  stage = "ss" if tt.BROKEN[kind][0] == "both" else tt.BROKEN[kind][0]
  root = str(tmp_path / "root")
  info = tt.write_tiny_trellis_dataset(root, num_good=2, broken=(kind,), filtered=())
  sha = info["broken"][kind]
  expected_file = {"ss": trellis_layout.ss_latent_path(root, tt.SS_MODEL, sha),
                   "slat": trellis_layout.slat_path(root, tt.SLAT_MODEL, sha),
                   "views": os.path.join(trellis_layout.views_dir(root, sha), "transforms.json"),
                   "metadata": os.path.join(root, "metadata.csv")}
  with pytest.raises(trellis_layout.BadDataError) as error:
    build(root, tmp_path / "data", stage)
  assert sha in str(error.value) and expected_file[tt.BROKEN[kind][2]] in str(error.value)
  assert error.value.reason == tt.BROKEN[kind][1]
  # The failed build left nothing that reads as a prepared dataset; a fixed root then builds.
  config = trellis_builder.trellis_config(root, stage, MODELS[stage])
  assert not trellis_builder.TrellisLatents(config=config, data_dir=str(tmp_path / "data")).is_prepared()
  assert not glob.glob(str(tmp_path / "data" / "**" / "dataset_info.json"), recursive=True)


@pytest.mark.parametrize("stage", ["ss", "slat"])
def test_skip_mode_counts_and_filters(root, skipped, stage):
  _, info = root
  builder = skipped[stage]
  summary = trellis_builder.build_summary(builder)
  broken = broken_for(stage)
  expected_skips = {}
  for reason in (v[1] for v in broken.values()):
    expected_skips[reason] = expected_skips.get(reason, 0) + 1
  assert summary["skipped"] == expected_skips
  assert sorted(s["sha256"] for s in summary["skipped_instances"]) == sorted(
      info["broken"][k] for k in broken)
  expected_filtered = {"cond_rendered is false": 1, f"{'latent' if stage == 'slat' else 'ss_latent'}_"
                       f"{MODELS[stage]} is false": 1}
  if stage == "slat":
    expected_filtered["more than 80 voxels"] = 1
  assert summary["filtered"] == expected_filtered
  kept = sha256s(builder)
  assert kept == (info["good"] + [info["broken"][k] for k in tt.BROKEN if k not in broken]
                  + [info["filtered"]["low_aesthetic"]]
                  + ([info["filtered"]["too_many_voxels"]] if stage == "ss" else []))  # metadata order
  assert summary["written"] == len(kept) and summary["rows"] == len(tt.BROKEN) + 4 + len(tt.FILTERED)


def test_ss_records(root, tmp_path):
  path, info = root
  norm = {"mean": list(range(8)), "std": [2.0] * 8}
  builder = build(path, tmp_path, "ss", on_bad_data="skip", normalization=norm)
  record = builder.as_data_source()["train"][0]
  assert record["sha256"].decode() == info["good"][0]
  raw = np.load(trellis_layout.ss_latent_path(path, tt.SS_MODEL, info["good"][0]))["mean"]
  expected = (np.moveaxis(raw, 0, -1) - np.arange(8, dtype=np.float32)) / np.float32(2)
  np.testing.assert_array_equal(record["ss_latent"], expected)
  assert [v.decode() for v in record["views"]] == ["000.png", "001.png"]
  assert record["aesthetic_score"] == 5.5 and len(record["captions"]) == 2


def test_slat_records_are_normalised(root, skipped):
  path, info = root
  builder = skipped["slat"]
  source = builder.as_data_source()["train"]
  norm = trellis_builder.PUBLISHED_SLAT_NORMALIZATION
  assert list(builder.info.metadata["normalization"]["mean"]) == list(norm["mean"])
  counts = sparse_batch.voxel_counts(builder, "train")
  for i, sha in enumerate(info["good"]):
    with np.load(trellis_layout.slat_path(path, tt.SLAT_MODEL, sha)) as raw:
      np.testing.assert_array_equal(source[i]["coords"], raw["coords"])
      expected = (raw["feats"] - np.float32(norm["mean"])) / np.float32(norm["std"])
      np.testing.assert_allclose(source[i]["feats"], expected, rtol=1e-6)
    assert source[i]["num_voxels"] == counts[i] == len(source[i]["coords"])


def test_min_aesthetic_and_config_names(root, tmp_path):
  path, info = root
  builder = build(path, tmp_path, "ss", on_bad_data="skip", min_aesthetic_score=4.5)
  assert trellis_builder.build_summary(builder)["filtered"]["aesthetic_score below 4.5"] == 1
  assert info["filtered"]["low_aesthetic"] not in sha256s(builder)
  names = {trellis_builder.trellis_config(path, "ss", "m").name,
           trellis_builder.trellis_config(path, "ss", "m", min_aesthetic_score=4.5).name,
           trellis_builder.trellis_config(str(tmp_path), "ss", "m").name}
  assert len(names) == 3


def test_inputs_conditions(root, skipped, tmp_path):
  path, info = root
  source = skipped["slat"].as_data_source()["train"]
  record = source[0]
  sha = info["good"][0]
  rng = lambda: np.random.default_rng(0)
  loaded = []
  image = trellis_inputs.TrellisInputs(
      path, "image", load_view=lambda p: loaded.append(p) or np.ones((518, 518, 3)))
  out = image(record, rng())
  assert out["sha256"] == sha and out["cond_image"].shape == (518, 518, 3)
  assert loaded[0] in [os.path.join(path, "renders_cond", sha, f) for f in ("000.png", "001.png")]
  assert out["coords"].shape == (record["num_voxels"], 3)
  # The default loader is mdt_jax.data.image's training crop.
  assert trellis_inputs.TrellisInputs(path, "image")(record, rng())["cond_image"].shape == (518, 518, 3)
  tokens = np.random.default_rng(1).standard_normal((2, 1374, 1024)).astype(np.float16)
  for v in range(2):
    os.makedirs(tmp_path / sha, exist_ok=True)
    np.save(tmp_path / sha / f"{v:03d}.npy", tokens[v])
  got = trellis_inputs.TrellisInputs(path, "tokens", token_dir=str(tmp_path))(record, rng())["cond"]
  assert any(np.array_equal(got, t) for t in tokens)
  caption = trellis_inputs.TrellisInputs(path, "text")(record, rng())["caption"]
  assert caption in ("a good-0 object", "the good-0 thing")


def test_sparse_pipeline_on_trellis(root, skipped):
  path, _ = root
  builder = skipped["slat"]
  source = builder.as_data_source()["train"]
  layout = pipeline.HostLayout(instances_per_device=2, devices_per_host=2)
  collate = pipeline.SparseCollate(sparse_batch.voxel_counts(builder, "train"), layout)
  batch = pipeline.host_batches(source, trellis_inputs.TrellisInputs(path, "none"), layout, seed=0,
                                collate=collate)[0]
  assert batch["x0"]["coords"].shape[:1] == (2,) and batch["sha256"].shape == (4,)
  assert batch["x0"]["mask"].sum() == batch["num_voxels"].sum()
