"""`--batch-size auto`: sized to the device, recorded in the manifest, and in the identity only where it decides answers."""

import json

import pytest
from conftest import run_builder

from builder.core.errors import BuilderError
from builder.core.records import Sampling
from builder.engines.batching import CPU_BATCH, GPU_BATCH, VLLM_BATCH, Device, engine_identity, fits_in_memory, resolve_batch_size
from builder.engines.models import ModelRef

CANDIDATES, JUDGMENTS = Sampling(4, 0.7, 0.9, 256), Sampling(3, 0.7, 0.9, 256)
H100 = Device("cuda", 78 * 2**30, "NVIDIA H100")


def model_folder(tmp_path, layers=30, heads=9, kv_heads=3, hidden=576, weights_bytes=2**20, dtype="bfloat16") -> ModelRef:
    """A model folder as far as sizing reads it: config.json and a weights file of the given size."""
    folder = tmp_path / f"model-{layers}-{kv_heads}-{weights_bytes}"
    folder.mkdir()
    config = {"num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads, "hidden_size": hidden,
              "dtype": dtype}
    (folder / "config.json").write_text(json.dumps(config))
    with open(folder / "model.safetensors", "wb") as weights:
        weights.truncate(weights_bytes)
    return ModelRef(str(folder), folder, "sha256:test")


def auto(backends, device, models=(), samplings=(CANDIDATES, JUDGMENTS)):
    return resolve_batch_size("auto", tuple(backends), lambda: device, list(models), "bfloat16", list(samplings))


def test_a_number_is_kept_and_auto_follows_the_device(tmp_path):
    small = model_folder(tmp_path)
    no_device = lambda: pytest.fail("a given number needs no device")  # noqa: E731
    assert resolve_batch_size(24, ("transformers",), no_device, [], "float32", [CANDIDATES]) == 24
    assert auto(["transformers"], Device("cpu")) == CPU_BATCH == 16
    assert auto(["transformers"], H100, [small]) == GPU_BATCH == 128  # SmolLM2-135M's shape: the measured 128
    assert auto(["vllm"], Device("cpu")) == auto(["vllm"], H100) == VLLM_BATCH
    assert auto(["openai"], H100) == 16
    assert auto(["openai", "transformers"], Device("cpu")) == CPU_BATCH  # a local judge on its own backend decides


def test_a_gpu_batch_shrinks_to_what_fits_next_to_the_weights(tmp_path):
    # an 8B Llama's shape: 32 layers, 8 of 32 heads for keys and values, 4096 wide; 16 GB of bfloat16 weights
    large = model_folder(tmp_path, layers=32, heads=32, kv_heads=8, hidden=4096, weights_bytes=16 * 10**9)
    per_request = 4 * (1024 + 256) * (2 * 32 * 8 * 128 * 2)  # the widest request: 4 samples of 1024 + 256 tokens
    expected = int((78 * 2**30 * 0.8 - 16 * 10**9) // per_request)
    assert fits_in_memory(large, "bfloat16", H100.free_bytes, [CANDIDATES, JUDGMENTS]) == 1 << (expected.bit_length() - 1) == 64
    assert auto(["transformers"], Device("cuda", 20 * 2**30), [large]) == 1  # nearly full: one request at a time, never zero
    float32_weights = model_folder(tmp_path, layers=32, heads=32, kv_heads=8, hidden=4096, weights_bytes=32 * 10**9, dtype="float32")
    halved = fits_in_memory(float32_weights, "bfloat16", H100.free_bytes, [CANDIDATES])
    assert halved == fits_in_memory(large, "bfloat16", H100.free_bytes, [CANDIDATES]), "float32 files load as bfloat16: half the bytes"


@pytest.mark.parametrize("value", [0, -3, "x", "1.5", True])
def test_a_bad_batch_size_is_one_line(value):
    with pytest.raises(BuilderError, match="--batch-size must be auto or a positive whole number"):
        resolve_batch_size(value, ("transformers",), lambda: Device("cpu"), [], "float32", [CANDIDATES])


def test_the_identity_holds_the_number_only_where_it_decides_answers():
    assert engine_identity("transformers", "float32", 16) == {"backend": "transformers", "dtype": "float32", "batch_size": 16}
    assert engine_identity("vllm", "bfloat16", 1024) == {"backend": "vllm", "dtype": "bfloat16"}
    assert engine_identity("openai", "float32", 16, "transformers")["batch_size"] == 16  # a transformers judge batches


@pytest.mark.parametrize("value, message", [("0", "--batch-size must be auto or a positive whole number"),
                                            ("many", "'many' is neither a whole number nor auto")])
def test_the_command_line_refuses_a_bad_batch_size_in_one_line(value, message, tmp_path):
    result = run_builder("make-pairs", "--batch-size", value, "--store", tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_auto_on_a_cpu_is_the_same_version_as_16_and_the_manifest_says_16(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hello."}\n{"prompt": "Name a fruit."}\n')
    fast = ["--model", tiny_model, "--prompts", prompts, "--store", tmp_path / "store", "--n-samples", "2", "--n-judgments", "1",
            "--max-new-tokens", "8", "--judge-max-new-tokens", "24"]
    default = run_builder("make-pairs", *fast, check=True).stdout.strip().splitlines()[-1]
    manifest = json.loads((tmp_path / "store" / default / "manifest.json").read_text())
    assert manifest["extra"]["batch_size"] == 16 and manifest["identity"]["engine"]["batch_size"] == 16
    explicit = run_builder("make-pairs", *fast, "--batch-size", "16", check=True)
    assert explicit.stdout.strip().splitlines()[-1] == default and "already built" in explicit.stderr
