"""Official Hugging Face-layout checkpoints -> Qwen2 modules. The only place that knows tensor names.

A checkpoint directory holds config.json and either model.safetensors or the shards listed in
model.safetensors.index.json; pickle is never touched. Every problem is reported with the file and
the tensor it concerns.

Reading is by hand (the format is an 8-byte header length, a JSON header of names, dtypes, shapes
and byte offsets, then the raw data), each tensor read into memory of its own rather than mapped.
A mapped file keeps every page it has served resident for as long as any tensor of it lives; with
private tensors, packing the linears for inference (fastlinear) frees each plain weight as its
packed copy is made, and the process holds one copy of the weights, not two.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from cascadener.qwen2.model import ConfigError, Qwen2, Qwen2Config

FLOAT_DTYPES = {torch.float32, torch.bfloat16, torch.float16}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}     # the names the tools take for a model's dtype
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    pass


def hf_name(name: str) -> str:
    """Our parameter name -> the name in an HF Qwen2ForCausalLM state dict."""
    return name if name == "lm_head.weight" else "model." + name


def weight_files(path: Path) -> dict[str, Path]:
    """Map every tensor name in the checkpoint to the file that holds it."""
    single, index = path / "model.safetensors", path / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files = {name: path / f for name, f in weight_map.items()}
        for f in sorted(set(files.values())):
            if not f.exists():
                raise CheckpointError(f"{index}: lists shard {f.name}, which is missing")
        return files
    if single.exists():
        return {name: single for name in _open(single).keys()}
    pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
    hint = f" (found {pickles}: pickle checkpoints are refused; convert them to safetensors)" if pickles else ""
    raise CheckpointError(f"{path}: no model.safetensors or {INDEX_FILE}{hint}")


SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


class SafetensorsFile:
    """The header of one .safetensors file, and its tensors read one at a time on request."""

    def __init__(self, file: Path):
        self.file = file
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < n <= size - 8:
                raise CheckpointError(f"{file}: corrupt or truncated safetensors file (header length {n}, "
                                      f"file size {size})")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{file}: corrupt safetensors header ({e})") from None
        header.pop("__metadata__", None)
        self.start, self.entries = 8 + n, header
        for name, e in header.items():
            begin, end = e["data_offsets"]
            if self.start + end > size:
                raise CheckpointError(f"{file}: corrupt or truncated safetensors file: tensor {name} ends at "
                                      f"byte {self.start + end}, the file has {size}")

    def keys(self) -> list[str]:
        return list(self.entries)

    def get_tensor(self, name: str) -> torch.Tensor:
        e = self.entries[name]
        dtype = SAFETENSORS_DTYPES.get(e["dtype"])
        if dtype is None:
            raise CheckpointError(f"{self.file}: tensor {name} has dtype {e['dtype']}, which is not supported")
        begin, end = e["data_offsets"]
        shape = torch.Size(e["shape"])
        if end - begin != shape.numel() * dtype.itemsize:
            raise CheckpointError(f"{self.file}: tensor {name} holds {end - begin} bytes, its shape "
                                  f"{tuple(shape)} and dtype {e['dtype']} need {shape.numel() * dtype.itemsize}")
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        buf = bytearray(end - begin)
        with open(self.file, "rb") as f:
            f.seek(self.start + begin)
            f.readinto(buf)
        return torch.frombuffer(buf, dtype=dtype).reshape(shape)     # owns `buf`: no copy, no mapping


def _open(file: Path) -> SafetensorsFile:
    try:
        return SafetensorsFile(file)
    except CheckpointError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as e:     # a header whose entries are malformed
        raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({e})") from None


def nonfinite(t: torch.Tensor) -> int:
    """How many NaN or infinite values `t` holds. Any of them makes the sum NaN or infinite, and a sum
    costs a fraction of an element-wise isfinite; they are counted only when it is (or overflowed)."""
    if torch.isfinite(t.sum()):
        return 0
    return int((~torch.isfinite(t)).sum())


def read_state_dict(path: Path, model_names: dict[str, torch.Size], dtype: torch.dtype,
                    tied: bool) -> dict[str, torch.Tensor]:
    files = weight_files(path)
    wanted = {hf_name(n): (n, shape) for n, shape in model_names.items()}
    if tied:
        wanted.pop("lm_head.weight")
    missing = sorted(set(wanted) - set(files))
    if missing:
        raise CheckpointError(f"{path}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                              f"({len(missing)} in all; does config.json match these weights?)")
    # A tied checkpoint may still carry a copy of the head; it is redundant, not an error.
    unexpected = sorted(set(files) - set(wanted) - ({"lm_head.weight"} if tied else set()))
    if unexpected:
        raise CheckpointError(f"{files[unexpected[0]]}: unexpected tensors {unexpected[:5]} "
                              f"({len(unexpected)} in all; does config.json match these weights?)")
    state: dict[str, torch.Tensor] = {}
    for file in sorted(set(files[n] for n in wanted)):
        handle = _open(file)
        present = set(handle.keys())
        for name in sorted(n for n in wanted if files[n] == file):
            if name not in present:
                raise CheckpointError(f"{file}: tensor {name} is listed in the index but not in the file")
            ours, shape = wanted[name]
            try:
                t = handle.get_tensor(name)
            except Exception as e:
                raise CheckpointError(f"{file}: cannot read tensor {name} ({e}); the file may be truncated") from None
            if t.dtype not in FLOAT_DTYPES:
                raise CheckpointError(f"{file}: tensor {name} has dtype {t.dtype}, expected a float type")
            if t.shape != shape:
                raise CheckpointError(f"{file}: tensor {name} has shape {tuple(t.shape)}, config.json implies "
                                      f"{tuple(shape)}")
            if bad := nonfinite(t):     # NaN weights would only surface as NaN scores in the output
                raise CheckpointError(f"{file}: tensor {name} holds {bad} NaN or infinite values")
            state[ours] = t.to(dtype)
    return state


def read_json_object(file: Path, error: type[ValueError] = CheckpointError) -> dict:
    """A checkpoint's JSON side file, which must hold one object; errors give file:line:column."""
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{file}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise error(f"{file}: not UTF-8 text ({e})") from None
    if not isinstance(d, dict):
        raise error(f"{file}: expected a JSON object, got {type(d).__name__}")
    return d


def load_config(path: str | Path) -> Qwen2Config:
    """config.json as transformers 4.x or 5.x writes it -> Qwen2Config."""
    file = Path(path) / "config.json"
    if not file.exists():
        raise CheckpointError(f"{path}: no config.json (expected a checkpoint in the Hugging Face layout)")
    try:
        return Qwen2Config.from_dict(from_transformers5(read_json_object(file), str(file)), source=str(file))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_generation_config(path: str | Path) -> dict:
    """generation_config.json (the checkpoint's sampling defaults), or {} when there is none."""
    file = Path(path) / "generation_config.json"
    return read_json_object(file) if file.exists() else {}


def from_transformers5(d: dict, source: str) -> dict:
    """transformers 5 moved `rope_theta` (and any scaling) into `rope_parameters` and describes each
    layer in `layer_types`; translate back to the 4.x fields Qwen2Config reads. Plain RoPE only: a
    scaled one would load and then run wrongly."""
    d = dict(d)
    rope = d.pop("rope_parameters", None)
    if rope is not None:
        if not isinstance(rope, dict) or "rope_theta" not in rope:
            raise ConfigError(f"{source}: rope_parameters {rope!r} has no rope_theta")
        kind = rope.get("rope_type", "default")
        extra = sorted(set(rope) - {"rope_theta", "rope_type"})
        if kind != "default" or extra:
            raise ConfigError(f"{source}: rope_parameters {rope!r} asks for RoPE scaling ({kind}), which is not "
                              "supported (only plain RoPE)")
        if d.get("rope_theta", rope["rope_theta"]) != rope["rope_theta"]:
            raise ConfigError(f"{source}: rope_theta {d['rope_theta']} disagrees with rope_parameters {rope!r}")
        d["rope_theta"] = rope["rope_theta"]
    kinds = sorted(set(d.get("layer_types") or ()) - {"full_attention"})
    if kinds:
        raise ConfigError(f"{source}: layer_types {kinds} are not supported (every layer must be full_attention)")
    return d


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Qwen2:
    """Build a Qwen2 from a checkpoint directory, validated tensor by tensor, in eval mode."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    cfg = load_config(path)
    with torch.device("meta"):
        model = Qwen2(cfg)
    shapes = {n: p.shape for n, p in model.named_parameters(remove_duplicate=False)}
    state = read_state_dict(path, shapes, dtype, cfg.tie_word_embeddings)
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_word_embeddings:  # assign=True replaced the shared Parameter; share it again
        model.lm_head.weight = model.embed_tokens.weight
    return model.to(device).eval().requires_grad_(False)


def save_model(model: Qwen2, path: str | Path) -> None:
    """Write a checkpoint in the official layout (config.json + model.safetensors)."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = asdict(model.config)
    cfg.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2",
               torch_dtype=str(model.dtype).removeprefix("torch."))
    tensors = {hf_name(n): p.detach().contiguous() for n, p in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight")
    tmp = path / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
