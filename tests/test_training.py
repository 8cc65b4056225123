"""The training loop on the tiny model: the loss, padding, LoRA training, outputs, resume, torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cascadener import load_model, load_tokenizer
from cascadener.geic.spans import Document, Span
from cascadener.qwen2.lora import gated, load_adapter, lora_layers
from cascadener.ner.pipeline import CascadeNER, Options
from cascadener.ner.prompts import get_format
from cascadener.ner.trained import trained_with
from cascadener.training.batches import collate, pack
from cascadener.training.config import TrainConfig
from cascadener.training.distributed import process_device
from cascadener.training.examples import chat_examples, load_task_data, tokenize_all
from cascadener.cli.train import STOP_EXIT, main
from cascadener.training.loop import build_model, lr_at, token_loss_sum

REPO = Path(__file__).resolve().parent.parent

FIXTURES = REPO / "tests" / "fixtures" / "training"
TRAIN, DEV = FIXTURES / "train.tsv", FIXTURES / "dev.tsv"


def argv(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["--task", "extract", "--data", str(TRAIN), "--base", str(ckpt), "--out", str(out), "--dtype", "fp32",
            "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-2", "--warmup", "2", "--save-every", "0", *extra]


def logged(out: Path, name: str = "train_log.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path, atol: float) -> None:
    ta, tb = adapter(a), adapter(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], atol=atol, rtol=0)


def run_train(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, **kwargs)


# --- the loss -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_model(tiny_ckpt):
    """The tiny model with non-zero adapters (so they matter) and no dropout (so runs repeat)."""
    cfg = TrainConfig(task="extract", data=str(TRAIN), base=str(tiny_ckpt), out="-", dtype="fp32",
                      lora_rank=4, lora_dropout=0.0)
    model = build_model(cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module")
def examples(tiny_tokenizer):
    docs, tree = load_task_data(TRAIN, None, None, seed=0)
    groups, _ = tokenize_all(chat_examples("extract", docs, tree, get_format("prefix"), 0), tiny_tokenizer, 512)
    return [pack(g) for g in groups]


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "activated"])
def sentences(tiny_tokenizer, request):
    """Joint-format sentences: an extraction and its questions, sharing their heads; for an
    activated adapter, each example knows where the adapter starts acting (after the head)."""
    docs, tree = load_task_data(TRAIN, None, None, seed=0)
    groups, _ = tokenize_all(chat_examples("joint", docs, tree, get_format("joint"), 0), tiny_tokenizer, 512,
                             activated=request.param)
    return [g for g in groups if len(g) > 2]


def test_head_only_at_loss_positions_equals_the_full_head(lora_model, examples):
    batch = collate(examples[:3], pad_id=0)
    full = lora_model(batch.inputs, pad_mask=batch.pad_mask)                        # (B, T, V), causal
    want = F.cross_entropy(full.flatten(0, 1)[batch.predict_at], batch.targets, reduction="sum")
    torch.testing.assert_close(token_loss_sum(lora_model, batch), want, rtol=1e-5, atol=1e-5)


def test_packed_sentences_have_the_loss_and_gradients_of_their_examples_alone(lora_model, sentences):
    rows = sentences[:3]
    packs = [pack(g) for g in rows]
    assert len({len(p) for p in packs}) == 3                                        # real padding
    assert all(len(p) < sum(map(len, g)) for p, g in zip(packs, rows))              # real sharing
    assert sum(p.n_targets for p in packs) == sum(e.n_targets for g in rows for e in g)
    assert all(e.adapt_from == 0 for g in rows for e in g) or all(0 < e.adapt_from < len(e) for g in rows for e in g)
    params = [p for p in lora_model.parameters() if p.requires_grad]

    def loss_and_grads(batches):
        lora_model.zero_grad()
        loss = 0
        for b in batches:
            batch = collate(b, pad_id=0)
            with gated(lora_model, batch.adapted[batch.pad_mask]):
                loss = loss + token_loss_sum(lora_model, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]

    batched = loss_and_grads([packs])
    alone = loss_and_grads([[pack([e])] for g in rows for e in g])
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(batched[1], alone[1]):      # fp32 sums in another order: error relative to the tensor
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6 * b.abs().max().item())


def test_gradient_checkpointing_changes_nothing_but_memory(tiny_ckpt, examples):
    grads = []
    for on in (False, True):
        cfg = TrainConfig(task="extract", data=str(TRAIN), base=str(tiny_ckpt), out="-", dtype="fp32",
                          lora_dropout=0.2, grad_checkpoint=on)
        model = build_model(cfg, torch.device("cpu"))
        for m in lora_layers(model).values():
            torch.nn.init.normal_(m.lora_B, std=0.05)
        torch.manual_seed(1)                    # the same dropout masks; the recomputation replays them
        token_loss_sum(model, collate(examples[:2], pad_id=0)).backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_lr_warms_up_linearly_then_decays_by_cosine():
    cfg = TrainConfig(task="extract", data="-", base="-", out="-", lr=1.0, warmup=4, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg, total=20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] == pytest.approx(0.1)


def test_batch_size_defaults_to_about_eight_examples_a_step_per_task():
    def size(task, **kw):
        return TrainConfig(task=task, data="-", base="-", out="-", **kw).batch_size
    assert [size(t) for t in ("extract", "classify", "joint")] == [8, 3, 3]
    assert size("joint", batch_size=5) == 5


# --- training runs --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_lora_training_overfits_a_tiny_set(tiny_ckpt, tmp_path, dtype):
    assert main(argv(tiny_ckpt, tmp_path, "--steps", "12", "--dtype", dtype, "--lora-dropout", "0")) == 0
    log = logged(tmp_path)
    assert [r["step"] for r in log] == list(range(1, 13))
    assert set(log[0]) >= {"step", "loss", "lr", "tokens_per_s"}
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    weights = adapter(tmp_path)                 # float32 master weights, whatever the compute dtype
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LORA"


@pytest.fixture(scope="module")
def trained(tiny_ckpt, tmp_path_factory) -> Path:
    """An extractor trained with a dev set, the paper format and --merge."""
    out = tmp_path_factory.mktemp("trained")
    assert main(argv(tiny_ckpt, out, "--steps", "6", "--dev", str(DEV), "--prompt-format", "paper", "--merge",
                     "--lora-dropout", "0")) == 0
    return out


def test_dev_f1_is_logged_and_the_best_adapter_kept(trained):
    (record,) = logged(trained, "dev_log.jsonl")
    assert record["step"] == 6 and 0.0 <= record["f1"] <= 1.0 and record["sentences"] == 3
    assert json.loads((trained / "best" / "dev_scores.json").read_text())["f1"] == record["f1"]
    assert_same_adapter(trained / "best", trained, atol=0)


def test_adapter_loads_in_the_inference_pipeline(trained, tiny_ckpt):
    ner = CascadeNER.load(model=tiny_ckpt, extractor_adapter=trained, classifier_adapter=trained,
                          dtype=torch.float32, options=Options(k=1, prompt_format="paper"))
    doc = ner.predict("Kobe visited Paris .", labels=["person", "location"])
    assert doc.text == "Kobe visited Paris ." and ner.stats.extraction_prompts == 1


def test_every_set_of_weights_a_run_writes_says_what_it_was_trained_on(trained, tiny_ckpt):
    for weights in (trained, trained / "best", trained / "checkpoint", trained / "merged"):
        assert trained_with(weights).prompt_format == "paper", weights
    ner = CascadeNER.load(model=trained / "merged", dtype=torch.float32, device="cpu")
    assert ner.options.prompt_format == "paper"
    with pytest.raises(ValueError, match="use --prompt-format paper"):
        CascadeNER.load(model=trained / "merged", dtype=torch.float32, options=Options(prompt_format="joint"))


def test_merged_weights_load_and_match_the_adapter_model(trained, tiny_ckpt):
    merged = load_model(trained / "merged")
    with_adapter = load_model(tiny_ckpt)
    load_adapter(with_adapter, trained, merge=False)
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    torch.testing.assert_close(merged(ids), with_adapter(ids), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(merged(ids), load_model(tiny_ckpt)(ids), atol=1e-3)   # training did something
    assert load_tokenizer(trained / "merged").encode("Kobe") == load_tokenizer(tiny_ckpt).encode("Kobe")
    assert (trained / "merged" / "generation_config.json").exists()


def test_classifier_trains_on_a_category_tree_and_is_scored_on_gold_mentions(tiny_ckpt, tmp_path, capsys):
    cmd = argv(tiny_ckpt, tmp_path, "--steps", "2", "--dev", str(DEV), "--categories", str(FIXTURES / "tree.json"))
    cmd[cmd.index("extract")] = "classify"
    assert main(cmd) == 0
    # 16 mentions in train.tsv, each asked at both levels of the tree (agent/place, then the type)
    assert "classify: 32 examples from 8 sentences" in capsys.readouterr().err
    (record,) = logged(tmp_path, "dev_log.jsonl")
    assert record["sentences"] == 3 and 0.0 <= record["f1"] <= 1.0


def test_an_existing_run_is_neither_overwritten_nor_resumed_with_other_settings(trained, tiny_ckpt, capsys):
    common = argv(tiny_ckpt, trained, "--steps", "6", "--dev", str(DEV), "--prompt-format", "paper")
    assert main(common) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pass --resume" in err and err.count("\n") == 1
    assert main([*common, "--resume", "--lr", "0.5"]) == 2
    assert "settings that differ from the run" in capsys.readouterr().err


def test_resume_after_a_kill_continues_exactly(tiny_ckpt, tmp_path):
    # Dropout on and three epochs (8 examples, global batch 4): data order and dropout RNG both matter.
    def cmd(out: Path, *extra: str) -> list[str]:
        return argv(tiny_ckpt, out, "--steps", "7", "--save-every", "2", "--lora-dropout", "0.1", *extra)

    assert main(cmd(tmp_path / "whole")) == 0
    killed = run_train("train.py", *cmd(tmp_path / "resumed", "--stop-after", "5"))
    assert killed.returncode == STOP_EXIT, killed.stderr
    assert [r["step"] for r in logged(tmp_path / "resumed")] == [1, 2, 3, 4, 5]
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 4

    assert main(cmd(tmp_path / "resumed", "--resume")) == 0
    whole, resumed = logged(tmp_path / "whole"), logged(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == list(range(1, 8))           # step 5 logged once, not twice
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole], rel=1e-5)
    assert [r["lr"] for r in resumed] == [r["lr"] for r in whole]
    assert_same_adapter(tmp_path / "resumed", tmp_path / "whole", atol=1e-6)


def test_torchrun_two_processes_train_like_one_with_the_same_global_batch(tiny_ckpt, tmp_path):
    # On the CPU both: what is compared is the split of the global batch, not two devices.
    one = argv(tiny_ckpt, tmp_path / "one", "--steps", "4", "--lora-dropout", "0", "--device", "cpu")
    assert main(one) == 0
    two = argv(tiny_ckpt, tmp_path / "two", "--steps", "4", "--lora-dropout", "0", "--device", "cpu")
    two[two.index("--grad-accum") + 1] = "1"                  # 2 processes x 2 examples x 1 = 4, as above
    done = run_train("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *two)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["loss"] for r in logged(tmp_path / "two")] == pytest.approx(
        [r["loss"] for r in logged(tmp_path / "one")], rel=1e-4)
    assert_same_adapter(tmp_path / "two", tmp_path / "one", atol=1e-5)


def test_torchrun_processes_take_a_gpu_each_or_all_the_cpu():
    cpu = torch.device("cpu")
    assert process_device("auto", 1, 2, gpus=2) == torch.device("cuda", 1)
    assert process_device("auto", 1, 2, gpus=1) == cpu          # too few GPUs for auto: none is used
    assert process_device("auto", 0, 2, gpus=0) == cpu
    assert process_device("cpu", 1, 2, gpus=8) == cpu
    with pytest.raises(ValueError):                             # asked for: refused in one line
        process_device("cuda", 1, 2, gpus=1)


# --- mixtures and adaptation ----------------------------------------------------------------------

def write_mixture(tmp_path: Path) -> Path:
    path = tmp_path / "mix.toml"
    path.write_text(f'[[source]]\nname = "en"\npath = "{TRAIN}"\n\n'
                    f'[[source]]\nname = "zh"\npath = "{REPO / "tests/fixtures/data/wikiann_zh.tsv"}"\nlang = "zh"\n'
                    f'weight = 2\n', encoding="utf-8")
    return path


def test_joint_training_on_a_mixture_of_languages(tiny_ckpt, tmp_path, capsys):
    cmd = argv(tiny_ckpt, tmp_path / "out", "--steps", "2", "--prompt-format", "joint")
    cmd[cmd.index("extract")], cmd[cmd.index("--data") + 1] = "joint", str(write_mixture(tmp_path))
    cmd[cmd.index("--data")] = "--mixture"
    assert main(cmd) == 0
    err = capsys.readouterr().err
    assert "  en: 8 of 8 sentences, weight 1" in err and "  zh: 2 of 2 sentences, weight 2" in err
    assert [r["step"] for r in logged(tmp_path / "out")] == [1, 2]
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["mixture"].endswith("mix.toml")


def test_bad_input_ends_in_one_error_line(tiny_ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[source]]\npath = "nowhere.tsv"\n')
    cmd = argv(tiny_ckpt, tmp_path / "out", "--steps", "1")
    cmd[cmd.index("--data"):cmd.index("--data") + 2] = ["--mixture", str(bad)]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: source nowhere.tsv: no file") and err.count("\n") == 1


def test_init_adapter_continues_from_its_weights_and_settings(trained, tiny_ckpt, tmp_path, capsys):
    # lr 0: the run's adapter is the one it started from; rank, alpha and targets are the adapter's
    cmd = argv(tiny_ckpt, tmp_path / "zero", "--steps", "1", "--lr", "0", "--init-adapter", str(trained))
    assert main(cmd) == 0
    assert_same_adapter(tmp_path / "zero", trained, atol=0)
    assert main(argv(tiny_ckpt, tmp_path / "moved", "--steps", "2", "--init-adapter", str(trained))) == 0
    moved, start = adapter(tmp_path / "moved"), adapter(trained)
    assert moved.keys() == start.keys() and any(not torch.equal(moved[k], start[k]) for k in start)
    assert main(argv(tiny_ckpt, tmp_path / "rank", "--steps", "1", "--init-adapter", str(trained),
                     "--lora-rank", "4")) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "adapter has rank 16" in err and "the run asks rank 4" in err
    # the prompts too: the adapter's when none are given (the runs above), refused when others are
    assert json.loads((tmp_path / "moved" / "train_config.json").read_text())["prompt_format"] == "paper"
    assert main(argv(tiny_ckpt, tmp_path / "other", "--steps", "1", "--init-adapter", str(trained),
                     "--prompt-format", "prefix")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --init-adapter") and "trained on 'paper' prompts" in err and err.count("\n") == 1


def test_joint_format_with_demonstrations_runs_the_cascade(tiny_ckpt):
    demo = Document("Kobe visited Paris .", [Span(0, 4, "person"), Span(13, 18, "location")])
    ner = CascadeNER.load(model=tiny_ckpt, dtype=torch.float32, options=Options(k=1, prompt_format="joint"),
                          demos=[demo])
    doc = ner.predict("Merkel met Obama in Berlin .", labels=["person", "location"])
    assert doc.text == "Merkel met Obama in Berlin ." and ner.stats.extraction_prompts == 1
    assert all(s.label in ("person", "location") for s in doc.spans)
