"""Loading official-layout checkpoints: sharded files, and every failure named by file and tensor."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from cascadener import CheckpointError, load_model, load_tokenizer
from cascadener.qwen2.checkpoint import load_config, nonfinite, save_model
from cascadener.qwen2.model import ConfigError, Qwen2Config


@pytest.fixture
def ckpt(tiny_ckpt, tmp_path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, dst)
    return dst


def rewrite(path: Path, edit) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def test_sharded_checkpoint_loads_like_single_file(ckpt, tmp_path):
    tensors = load_file(str(ckpt / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    sharded = tmp_path / "sharded"
    shutil.copytree(ckpt, sharded)
    (sharded / "model.safetensors").unlink()
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, str(sharded / file))
    index = {"weight_map": {n: f for f, part in shards.items() for n in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(load_model(sharded)(ids), load_model(ckpt)(ids))


def test_missing_tensor_is_named(ckpt):
    rewrite(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors \['model.layers.1.mlp.up_proj.weight'\]"):
        load_model(ckpt)


def test_unexpected_tensor_is_named(ckpt):
    rewrite(ckpt, lambda t: t.update({"model.layers.0.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: unexpected tensors \['model.layers.0.extra"):
        load_model(ckpt)


def test_wrong_shape_is_named(ckpt):
    rewrite(ckpt, lambda t: t.update({"model.norm.weight": np.ones(10, np.float32)}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor model.norm.weight has shape \(10,\)"):
        load_model(ckpt)


def test_wrong_dtype_is_named(ckpt):
    rewrite(ckpt, lambda t: t.update({"model.norm.weight": np.ones(64, np.int32)}))
    with pytest.raises(CheckpointError, match="tensor model.norm.weight has dtype torch.int32"):
        load_model(ckpt)


def test_truncated_file_is_reported(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: .*truncated"):
        load_model(ckpt)


def test_config_that_does_not_match_the_weights(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(cfg | {"num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="missing tensors.*does config.json match"):
        load_model(ckpt)
    (ckpt / "config.json").write_text(json.dumps(cfg | {"intermediate_size": 96}))
    with pytest.raises(CheckpointError, match="config.json implies"):
        load_model(ckpt)


def test_untied_checkpoint_needs_its_head(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(cfg | {"tie_word_embeddings": False}))
    with pytest.raises(CheckpointError, match=r"missing tensors \['lm_head.weight'\]"):
        load_model(ckpt)


def test_pickle_checkpoints_are_refused(ckpt):
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle checkpoints are refused"):
        load_model(ckpt)


def test_missing_config_and_tokenizer(ckpt):
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_tokenizer(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(ckpt)


@pytest.mark.parametrize("change, message", [
    ({"shiny_new_field": 1}, r"unknown config fields \['shiny_new_field'\]"),
    ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
    ({"hidden_size": 66}, "not divisible"),
    ({"use_sliding_window": True}, "use_sliding_window=true is not supported"),
    ({"rope_scaling": {"type": "yarn", "factor": 4}}, "rope_scaling"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"model_type": "gpt2"}, "not a Qwen2-family model"),
])
def test_config_errors(change, message, tiny_ckpt):
    base = json.loads((tiny_ckpt / "config.json").read_text())
    with pytest.raises(ConfigError, match=message):
        Qwen2Config.from_dict(base | change)


def test_sliding_window_fields_are_accepted_when_off(tiny_ckpt):
    cfg = load_config(tiny_ckpt)
    assert cfg.head_dim == 16 and cfg.eos_ids == [2]


def test_llama_style_layers_without_qkv_bias(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(cfg | {"attention_bias": False}))
    rewrite(ckpt, lambda t: [t.pop(n) for n in [n for n in t if n.endswith("_proj.bias")]])
    model = load_model(ckpt)
    assert model.layers[0].self_attn.q_proj.bias is None
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]]))).all()


def test_save_model_round_trips(tiny_ckpt, tmp_path):
    model = load_model(tiny_ckpt)
    save_model(model, tmp_path / "out")
    again = load_model(tmp_path / "out")
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(model(ids), again(ids))
    assert "lm_head.weight" not in load_file(str(tmp_path / "out" / "model.safetensors"))


@pytest.mark.real
def test_real_checkpoint_layout(real_ckpt):
    model = load_model(real_ckpt, torch.bfloat16)
    assert model.lm_head.weight is model.embed_tokens.weight        # tied head, absent from the file
    assert model.config.vocab_size == 151936 and model.dtype == torch.bfloat16


def test_the_model_owns_its_weights_once_loaded(ckpt):
    """Tensors are read into memory of their own, not mapped from the file: rewriting the file
    afterwards changes nothing (a mapping would serve the new bytes to pages not yet touched)."""
    before = {n: p.clone() for n, p in load_model(ckpt).named_parameters()}
    model = load_model(ckpt)
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    n = 8 + int.from_bytes(data[:8], "little")
    f.write_bytes(data[:n] + bytes(len(data) - n))            # same header, every weight zeroed
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_a_tensor_whose_bytes_do_not_fit_its_shape_is_named(ckpt):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [2 * d for d in header[name]["shape"]]
    raw = json.dumps(header).encode()                            # offsets count from the data, so n may change
    f.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
    with pytest.raises(CheckpointError, match=f"{name}.*bytes"):
        load_model(ckpt)


# --- checkpoints from today's tools, and weights that must not load -------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def test_transformers5_config_loads_like_the_4x_one(ckpt, tiny_ckpt):
    """transformers 5 writes rope_parameters, dtype and layer_types (the tiny shape, as 5.24 saves it)."""
    shutil.copy(FIXTURES / "config_transformers5.json", ckpt / "config.json")
    assert "rope_theta" not in json.loads((ckpt / "config.json").read_text())
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.equal(load_model(ckpt)(ids), load_model(tiny_ckpt)(ids))


@pytest.mark.parametrize("rope, message", [
    ({"rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0}, "RoPE scaling"),
    ({"rope_theta": 10000.0, "rope_type": "default", "factor": 4.0}, "RoPE scaling"),
    ({"rope_type": "default"}, "no rope_theta"),
])
def test_transformers5_rope_scaling_is_refused_naming_the_file(ckpt, rope, message):
    cfg = json.loads((FIXTURES / "config_transformers5.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(cfg | {"rope_parameters": rope}))
    with pytest.raises(CheckpointError, match=f"config.json: .*{message}"):
        load_model(ckpt)


def test_sliding_layers_are_refused(ckpt):
    cfg = json.loads((FIXTURES / "config_transformers5.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(cfg | {"layer_types": ["full_attention", "sliding_attention"]}))
    with pytest.raises(CheckpointError, match=r"config.json: layer_types \['sliding_attention'\]"):
        load_model(ckpt)


def test_a_model_saved_by_the_installed_transformers_loads(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is the optional oracle that saves it")
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   rope_theta=5000.0, tie_word_embeddings=True)
    hf = transformers.Qwen2ForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")
    assert ours.config.rope_theta == 5000.0
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        expected = hf(ids).logits
    assert (ours(ids) - expected).abs().max() < 1e-4


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_infinite_weights_are_refused_naming_the_tensor(ckpt, bad):
    def poison(t):
        w = t["model.layers.1.mlp.down_proj.weight"].copy()
        w[3, 5] = bad
        t["model.layers.1.mlp.down_proj.weight"] = w
    rewrite(ckpt, poison)
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor model.layers.1.mlp.down_proj.weight "
                                              r"holds 1 NaN or infinite values"):
        load_model(ckpt)


def test_missing_or_broken_tokenizer_config_is_refused_naming_the_file(ckpt):
    (ckpt / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json:1:2: not valid JSON"):
        load_tokenizer(ckpt)
    (ckpt / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match="tokenizer_config.json: missing"):
        load_tokenizer(ckpt)


def test_weights_folder_is_never_inside_the_installed_package(monkeypatch, tmp_path):
    from cascadener.qwen2 import locate
    monkeypatch.setenv("CASCADENER_HOME", str(tmp_path / "home"))
    assert locate.weights_dir() == tmp_path / "home" / "weights"
    monkeypatch.delenv("CASCADENER_HOME")
    assert locate.weights_dir() == locate.SOURCE_ROOT / "weights"          # this source checkout
    monkeypatch.setattr(locate, "SOURCE_ROOT", tmp_path / "site-packages")   # an installed copy
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert locate.weights_dir() == tmp_path / "cache" / "cascadener" / "weights"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.5, -3.0, 6e4, -6e4, 3e38, math.nan, math.inf, -math.inf]), min_size=1,
                max_size=40), st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_nonfinite_counts_exactly_even_when_the_sum_overflows(values, dtype):
    t = torch.tensor(values).to(dtype)            # 3e38 is inf in float16: counted, as the weights would hold it
    assert nonfinite(t) == sum(not math.isfinite(v) for v in t.float().tolist())
