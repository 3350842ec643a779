"""The MDT-dist paper's evaluation in one call: conditions x rows -> generated assets -> 4 renders each ->
FD_dinov2 and KD_dinov2 against a reference (``launch/evaluate_assets.py``, ``configs/evaluate_assets.py``).

For every row (checkpoints plus sampler settings per stage) and every asset (a condition and a sample
index; asset ``k`` draws the noise ``sample_ids=[k]`` of ``TwoStagePipeline`` in every row, so rows differ
only in their models and settings) it generates the structured latent, decodes it to Gaussians with the
configured Gaussian decoder, renders the protocol's views (:mod:`mdt_jax.eval.asset_protocol`) and writes
``OUT/renders/<row>/<asset>/<view>.png``. An asset whose renders and record are there is not generated
again, so an interrupted evaluation resumes. Assets are spread over ``jax.local_devices()``, one thread per
device. Then every row's renders go through DINOv2 and are compared with the reference's: another row
(e.g. the teacher's many-step samples) or a directory of ground-truth renders in the same protocol.
``OUT/metrics.json`` and ``OUT/report.md`` hold the numbers.
"""
from __future__ import annotations

import concurrent.futures
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from conversion import dinov2 as dinov2_conversion
from conversion.trellis import load_model
from mdt_jax import numerics
from mdt_jax.data import image as condition_image
from mdt_jax.data import trellis_layout
from mdt_jax.encoders import encode_images
from mdt_jax.eval import asset_protocol
from mdt_jax.eval.feature_distances import frechet_distance, kernel_distance
from mdt_jax.generation import StageSampling, TwoStagePipeline
from mdt_jax.sparse import SparseTensor


def load_token_conditions(specs) -> dict[str, np.ndarray]:
  """``FILE.npy`` or ``FILE.npz:KEY`` holding [L, C] or [K, L, C] tokens -> ``{name: [L, C] float32}``;
  names are the file stem (and ``_<k>`` for stacked tokens)."""
  conditions = {}
  for spec in specs:
    path, _, key = str(spec).partition(":")
    if not Path(path).is_file():
      raise FileNotFoundError(f"conditions.tokens: no such file {path}")
    tokens = np.asarray(np.load(path)[key] if key else np.load(path), np.float32)
    if tokens.ndim not in (2, 3):
      raise ValueError(f"conditions.tokens: {spec} holds shape {tokens.shape}, expected [L, C] or [K, L, C]")
    stem = Path(path).name.split(".")[0] + (f"_{key}" if key else "")
    if tokens.ndim == 2:
      conditions[stem] = tokens
    else:
      conditions.update({f"{stem}_{k}": t for k, t in enumerate(tokens)})
  return conditions


def load_view_conditions(root, instances, *, view: int, encoder_checkpoint: str, encoder_config: str | None,
                         image_size: int) -> dict[str, np.ndarray]:
  """Condition views in TRELLIS's dataset layout (``root/renders_cond/<sha256>/``, view ``view`` of its
  ``transforms.json``) -> TRELLIS's inference crop at ``image_size`` -> DINOv2 condition tokens
  (``mdt_jax.encoders.encode_images``) -> ``{sha256: [L, C] float32}``."""
  model, params = dinov2_conversion.load_checkpoint(encoder_checkpoint, encoder_config or None)
  encode = jax.jit(lambda p, x: encode_images(model, p, x))
  conditions = {}
  for sha256 in instances:
    files = trellis_layout.load_view_files(root, sha256)
    if not 0 <= view < len(files):
      raise ValueError(f"conditions.view {view}: {sha256} has {len(files)} condition views")
    path = Path(trellis_layout.views_dir(root, sha256)) / files[view]
    image = condition_image.preprocess_inference_image(path, size=image_size)
    conditions[sha256] = np.asarray(encode(params, image[None]))[0]
  return conditions


def load_conditions(config) -> dict[str, np.ndarray]:
  """The config's ``conditions`` section (token files, or TRELLIS-layout views) -> ``{name: [L, C]}``."""
  c = config.conditions
  if bool(c.tokens) == bool(c.trellis_root):
    raise ValueError("conditions: set exactly one of conditions.tokens and conditions.trellis_root")
  if c.tokens:
    return load_token_conditions(c.tokens)
  if not c.instances or not c.encoder_checkpoint:
    raise ValueError("conditions.trellis_root needs conditions.instances and conditions.encoder_checkpoint")
  return load_view_conditions(c.trellis_root, c.instances, view=c.view, encoder_checkpoint=c.encoder_checkpoint,
                              encoder_config=c.encoder_config, image_size=c.image_size)


class _RowModels:
  """One row's pipeline and the Gaussian decoder, their params copied to ``device``."""

  def __init__(self, models: dict, decoder, decoder_params, *, slat_mean, slat_std, device):
    put = lambda p: jax.device_put(p, device)
    self.pipeline = TwoStagePipeline(models["ss_flow"][0], put(models["ss_flow"][1]), models["ss_decoder"][0],
                                     put(models["ss_decoder"][1]), models["slat_flow"][0], put(models["slat_flow"][1]),
                                     slat_mean=slat_mean, slat_std=slat_std)
    self.decoder, self.decoder_params = decoder, put(decoder_params)
    self._decode = jax.jit(lambda p, x: decoder.apply({"params": p}, x))

  def gaussians(self, cond, key, sample_id: int, ss: StageSampling, slat: StageSampling):
    """-> (one sample's activated Gaussians or None when no voxel is occupied, its voxel count)."""
    generation = self.pipeline(cond[None], key, ss=ss, slat=slat, sample_ids=np.array([sample_id]))
    coords, feats = generation.sample(0)
    if not len(coords):
      return None, 0
    x = SparseTensor.from_packed(np.concatenate([np.zeros((len(coords), 1), np.int32), coords], 1), feats)
    out = self._decode(self.decoder_params, x)
    return self.decoder.apply({"params": self.decoder_params}, out, method="to_representation")[0], len(coords)


_STAGES = ("ss_flow", "ss_decoder", "slat_flow")


def _check_decoder(decoder, row: str, slat_flow):
  problems = []
  if decoder.latent_channels != slat_flow.out_channels:
    problems.append(f"latent_channels {decoder.latent_channels} != SLat flow out_channels {slat_flow.out_channels}")
  if decoder.resolution != slat_flow.resolution:
    problems.append(f"resolution {decoder.resolution} != SLat flow resolution {slat_flow.resolution}")
  if problems:
    raise ValueError(f"decoder does not fit row {row!r}: {'; '.join(problems)}")


class _ModelCache:
  """Rows that name the same checkpoints share their loaded models and, per device, their compiled
  functions (a row with other sampler settings still compiles its own sampler)."""

  def __init__(self, decoder_model, config):
    self.decoder_model, self.config, self.lock = decoder_model, config, threading.Lock()
    self.models, self.per_device = {}, {}

  def load(self, name: str, row) -> tuple[str, ...]:
    """Loads (once) the row's checkpoints; ValueError if the decoder does not fit its SLat flow."""
    paths = tuple(str(Path(row.checkpoint_dir) / row[k]) for k in _STAGES)
    with self.lock:
      if paths not in self.models:
        dtype = numerics.compute_dtype(self.config.compute_dtype)
        self.models[paths] = {k: load_model(p, dtype=dtype) for k, p in zip(_STAGES, paths)}
    _check_decoder(self.decoder_model[0], name, self.models[paths]["slat_flow"][0])
    return paths

  def on_device(self, paths: tuple[str, ...], device) -> _RowModels:
    with self.lock:
      if (paths, device) not in self.per_device:
        self.per_device[paths, device] = _RowModels(self.models[paths], *self.decoder_model, device=device,
                                                    slat_mean=self.config.slat_mean, slat_std=self.config.slat_std)
      return self.per_device[paths, device]


class _Progress:
  """``[row] done/total assets (k cached), elapsed, ETA`` lines; the ETA is the remaining assets times the
  mean seconds of the assets generated so far (cached ones cost nothing), over the ``parallel`` devices."""

  def __init__(self, total: int, log: Callable[[str], Any], parallel: int = 1):
    self.total, self.log, self.parallel, self.lock = total, log, parallel, threading.Lock()
    self.done = self.cached = 0
    self.generated_seconds, self.generated = 0.0, 0
    self.start = time.perf_counter()

  def step(self, row: str, asset: str, seconds: float | None):
    with self.lock:
      self.done += 1
      if seconds is None:
        self.cached += 1
      else:
        self.generated += 1
        self.generated_seconds += seconds
      eta = (self.total - self.done) * self.generated_seconds / max(self.generated, 1) / self.parallel
      what = "cached" if seconds is None else f"{seconds:.1f} s"
      self.log(f"[{row}] {asset} ({what}): {self.done}/{self.total} assets ({self.cached} cached), "
               f"{time.perf_counter() - self.start:.0f} s elapsed, ETA {eta:.0f} s")


def _generate_row(name: str, row, assets, conditions, cache: _ModelCache, out_dir: Path, config, protocol, progress):
  """Renders every asset of one row not already in ``out_dir/renders/<name>`` -> {asset: record}."""
  set_dir = out_dir / "renders" / name
  asset_protocol.write_protocol(set_dir, protocol)
  records = {a: asset_protocol.cached_record(set_dir, a, protocol) for a, _, _ in assets}
  for asset, _, _ in assets:
    if records[asset] is not None:
      progress.step(name, asset, None)
  pending = [a for a in assets if records[a[0]] is None]
  if not pending:
    return records
  paths = cache.load(name, row)
  ss, slat = StageSampling(**row.ss.to_dict()), StageSampling(**row.slat.to_dict())
  key = jax.random.key(config.seed)
  devices = jax.local_devices()

  def work(device_index: int):
    device = devices[device_index]
    with jax.default_device(device):
      row_models = cache.on_device(paths, device)
      for asset, condition, sample_id in pending[device_index::len(devices)]:
        start = time.perf_counter()
        gaussians, n_voxels = row_models.gaussians(conditions[condition], key, sample_id, ss, slat)
        if gaussians is not None:
          bad = [k for k in ("xyz", "scaling", "rotation", "opacity", "color")
                 if not np.all(np.isfinite(np.asarray(gaussians[k])))]
          if bad:
            raise ValueError(f"row {name!r}, asset {asset}: non-finite Gaussian field(s) {bad}")
        images = protocol.background() if gaussians is None else protocol.render(gaussians)
        seconds = time.perf_counter() - start
        record = {"condition": condition, "sample_id": sample_id, "n_voxels": n_voxels,
                  "n_gaussians": 0 if gaussians is None else len(gaussians["xyz"]), "seconds": seconds,
                  "device": str(device)}
        asset_protocol.write_asset(set_dir, asset, images, protocol, record)
        records[asset] = record
        progress.step(name, asset, seconds)

  with concurrent.futures.ThreadPoolExecutor(len(devices)) as pool:
    for future in [pool.submit(work, d) for d in range(min(len(devices), len(pending)))]:
      future.result()
  return records


def _load_features(config):
  f = config.features
  model, params = dinov2_conversion.load_checkpoint(f.checkpoint, f.config or None)
  return asset_protocol.DinoFeatures(model, params, image_size=f.image_size, batch_size=f.batch_size)


def _check_reference(config, protocol) -> list[str] | None:
  """The reference directory's assets (validated before anything is generated), or None for a row."""
  ref = config.reference
  if bool(ref.row) == bool(ref.dir):
    raise ValueError("reference: set exactly one of reference.row and reference.dir")
  if ref.row:
    if ref.row not in config.rows:
      raise ValueError(f"reference.row {ref.row!r} is not a row; rows: {list(config.rows)}")
    return None
  return asset_protocol.check_render_set(ref.dir, protocol)


def _check_required(config):
  """One ValueError naming every path the config leaves empty (the ``toys4k`` variant's blanks)."""
  if len(config.rows) < 1:
    raise ValueError("rows: no rows to evaluate")
  empty = [f"rows.{name}.checkpoint_dir" for name, row in config.rows.items() if not row.checkpoint_dir]
  empty += [field for field, value in (("decoder", config.decoder), ("features.checkpoint", config.features.checkpoint))
            if not value]
  if empty:
    raise ValueError(f"set {', '.join(empty)} (--config.<field>=PATH)")


def evaluate_assets(config, out_dir, *, log: Callable[[str], Any] = print) -> dict[str, Any]:
  """Runs the evaluation the config describes (``configs/evaluate_assets.py``) into ``out_dir`` and returns
  what it writes to ``out_dir/metrics.json``: ``{"protocol": {...}, "rows": [{"name", "fd_dinov2",
  "kd_dinov2", "seconds_per_asset", "n_assets", "n_images", "reference", "ss", "slat", "checkpoints"}]}``.
  ``seconds_per_asset``: the median over the row's assets of generation + decoding + rendering (a device's
  first asset includes compilation). The reference row has no distances (None).

  Raises, before anything is generated: ValueError naming a config field (conditions, rows, reference),
  ProtocolMismatch listing how a reference directory (or a resumed ``out_dir``) differs from the run.
  """
  out_dir = Path(out_dir)
  _check_required(config)
  protocol = asset_protocol.RenderProtocol.from_mapping(config.protocol)
  reference_assets = _check_reference(config, protocol)
  conditions = load_conditions(config)
  assets = [(f"{c}_s{s}", c, i * config.samples_per_condition + s)
            for i, c in enumerate(conditions) for s in range(config.samples_per_condition)]
  decoder_model = load_model(config.decoder)
  progress = _Progress(len(assets) * len(config.rows), log, parallel=len(jax.local_devices()))
  log(f"{len(assets)} assets x {len(config.rows)} rows on {len(jax.local_devices())} device(s)")
  cache = _ModelCache(decoder_model, config)
  for name, row in config.rows.items():
    cache.load(name, row)                                  # a decoder that does not fit: named before sampling
  records = {name: _generate_row(name, row, assets, conditions, cache, out_dir, config, protocol, progress)
             for name, row in config.rows.items()}

  features = _load_features(config)
  names = [a for a, _, _ in assets]
  row_features = {name: features(asset_protocol.load_renders(out_dir / "renders" / name, names, protocol))
                  for name in config.rows}
  if reference_assets is None:
    reference = row_features[config.reference.row]
  else:
    reference = features(asset_protocol.load_renders(config.reference.dir, reference_assets, protocol))
  rows = []
  for name, row in config.rows.items():
    is_reference = name == config.reference.row
    rows.append({
        "name": name,
        "fd_dinov2": None if is_reference else frechet_distance(row_features[name], reference),
        "kd_dinov2": None if is_reference else kernel_distance(row_features[name], reference),
        "seconds_per_asset": statistics.median(r["seconds"] for r in records[name].values()),
        "n_assets": len(assets), "n_images": len(row_features[name]), "reference": is_reference,
        "ss": row.ss.to_dict(), "slat": row.slat.to_dict(),
        "checkpoints": {k: str(Path(row.checkpoint_dir) / row[k]) for k in _STAGES}})
  metrics = {"protocol": {"render": protocol.as_dict(), "features": {"encoder": config.features.config or
                                                                       dinov2_conversion.DEFAULT_PRESET,
                                                                       **features.describe()},
                          "reference": f"row {config.reference.row}" if config.reference.row else config.reference.dir,
                          "n_reference_images": len(reference), "decoder": str(config.decoder),
                          "seed": config.seed, "samples_per_condition": config.samples_per_condition,
                          "n_conditions": len(conditions), "kd_kernel": "(x.y/d + 1)^3, unbiased MMD^2"},
             "rows": rows}
  text = json.dumps(metrics, indent=2)
  (out_dir / "metrics.json").write_text(text)
  (out_dir / "report.md").write_text(report_markdown(metrics))
  log(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'report.md'}")
  return json.loads(text)


def report_markdown(metrics: dict) -> str:
  """``metrics.json``'s content -> a Markdown table and the protocol it was measured with."""
  p = metrics["protocol"]
  r, f = p["render"], p["features"]
  lines = ["# Asset evaluation", "",
           f"{p['n_conditions']} conditions x {p['samples_per_condition']} samples per row, reference: "
           f"{p['reference']} ({p['n_reference_images']} images). Renders: yaw {r['yaws_deg']} deg, pitch "
           f"{r['pitch_deg']}, radius {r['radius']}, fov {r['fov_deg']}, {r['resolution']} px ({r['camera']}). "
           f"Features: {f['encoder']}, {f['resize']} to {f['image_size']} px, {f['normalisation']}, {f['token']}.",
           "", "| row | FD_dinov2 | KD_dinov2 | s / asset | assets | SS steps x cfg | SLat steps x cfg |",
           "|---|---|---|---|---|---|---|"]
  for row in metrics["rows"]:
    fd = "reference" if row["reference"] else f"{row['fd_dinov2']:.4g}"
    kd = "reference" if row["reference"] else f"{row['kd_dinov2']:.4g}"
    lines.append(f"| {row['name']} | {fd} | {kd} | {row['seconds_per_asset']:.3g} | {row['n_assets']} | "
                 f"{row['ss']['steps']} x {row['ss']['cfg_strength']:g} | "
                 f"{row['slat']['steps']} x {row['slat']['cfg_strength']:g} |")
  return "\n".join(lines) + "\n"
