"""Everything a training run is told, in one dataclass: train.py fills it, the loop reads it, and
its JSON copy in OUT/ lets --resume check that it continues the same run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cascadener.qwen2.checkpoint import DTYPES
from cascadener.qwen2.lora import ALL_TARGETS, LoRAConfig

TASKS = ("extract", "classify", "joint")
# Sentences per micro-batch when --batch-size is not given: about eight examples a step, as the
# recipes were tuned. Extraction has one example per sentence; classification and joint about
# three (a sentence's questions, and its extraction). The joint recipe on 400 CoNLL-2003
# sentences scored 0.828 at 3 and 0.806 at 8, which takes a third as many steps (BENCHMARKS.md).
DEFAULT_BATCH_SIZE = {"extract": 8, "classify": 3, "joint": 3}

# Fields that steer the run without changing its trajectory: they may differ on --resume. (Not
# `steps`: the cosine schedule is laid out over the total.)
RUN_CONTROL = ("out", "resume", "merge", "save_every", "eval_every", "log_every", "stop_after", "device")


class TrainError(ValueError):
    """A run that cannot start as asked (its message says why and what to do)."""


@dataclass
class TrainConfig:
    task: str                               # "extract": sentence -> marked sentence; "classify": mention -> type;
                                            # "joint": both, one adapter for the two stages
    base: str                               # base checkpoint directory (official HF layout)
    out: str                                # adapter, checkpoints and logs go here
    data: str | None = None                 # CoNLL column file, GEIC .json or .jsonl
    mixture: str | None = None              # or a mixture of datasets (training/mixture.py), TOML or JSON
    init_adapter: str | None = None         # start from this adapter (PEFT layout) instead of fresh LoRA weights
    dev: str | None = None                  # labelled dev file: span F1 every eval_every steps, best kept
    dev_sample: int = 200                   # stratified dev subset (generation is slow on CPU)
    prompt_format: str = "prefix"           # prompts.py format: prefix or joint (the project's adapters) or paper
    system: str | None = None               # system prompt; None = the format's own
    categories: str | None = None           # category tree for --data (default: the dataset's own types, flat);
                                            # with a mixture, the tree of the dev set only
    shots: int | None = None                # train on a stratified few-shot sample of this many sentences
    steps: int | None = None                # optimizer steps; None = `epochs` passes over the data
    epochs: float = 1.0
    batch_size: int | None = None           # sentences per micro-batch (each with all its examples), per process;
                                            # None = DEFAULT_BATCH_SIZE[task]
    grad_accum: int = 1                     # micro-batches per optimizer step, per process
    lr: float = 2e-4
    warmup: int = 10                        # linear warmup steps, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0               # PEFT's usual setting for LoRA
    grad_clip: float = 1.0                  # max global grad norm; 0 = off
    lora_rank: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    activated: bool = False                 # the adapter acts after each prompt's head only (qwen2/lora.py)
    targets: list[str] = field(default_factory=lambda: list(ALL_TARGETS))
    seed: int = 0
    max_len: int = 1024                     # longer examples are left out (a cut answer would teach stopping mid-way)
    grad_checkpoint: bool = False           # recompute each block in backward: less memory, ~30% more time
    dtype: str = "bf16"                     # bf16: frozen base in bf16 + autocast, fp32 LoRA weights; fp32: all fp32
    save_every: int = 100                   # resumable checkpoint every N steps (0 = only at the end)
    eval_every: int = 0                     # dev evaluation every N steps (0 = only at the end)
    log_every: int = 1
    resume: bool = False
    merge: bool = False                     # also write base + adapter merged, official layout, to OUT/merged
    stop_after: int | None = None           # testing hook: raise Crash after this step, saving nothing
    device: str = "auto"                    # auto (CUDA when there is one), cpu, cuda or cuda:N (one process)

    def __post_init__(self) -> None:
        if (self.data is None) == (self.mixture is None):
            raise ValueError("give the training data as data or as mixture (one of them)")
        if self.mixture is not None and self.shots is not None:
            raise ValueError("shots applies to data; a mixture names each source's sentences itself")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH_SIZE[self.task]
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        for name in ("batch_size", "grad_accum", "lora_rank", "max_len", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.activated and (self.dev or self.merge):
            raise ValueError("an activated adapter is read beside its base model: --dev (scored through merged "
                             "weights) and --merge (full weights) do not apply; evaluate it with eval.py")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")

    def lora(self) -> LoRAConfig:
        return LoRAConfig(r=self.lora_rank, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=list(self.targets), activated=self.activated)

    def to_dict(self) -> dict:
        return asdict(self)

    def trajectory_differences(self, saved: dict) -> list[str]:
        """Fields (other than RUN_CONTROL) whose value differs from a saved run's config."""
        mine = self.to_dict()
        return sorted(k for k in mine.keys() | saved.keys()
                      if k not in RUN_CONTROL and mine.get(k) != saved.get(k))
