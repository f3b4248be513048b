"""The VLM reasoner: HF round trips, heads, LoRA, training, QA samples (all tiny, CPU)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from agent.data.schema import FLAGS, INTENTS
from agent.reasoner.qa import CAPTION_PROMPT, SAMPLES_PER_FRAME, training_samples
from agent.reasoner.tiny_vlm import TinyVLMConfig
from agent.reasoner.train import train_vlm
from agent.reasoner.types import Reasoning, ReasoningModel
from agent.reasoner.vlm import IGNORE_INDEX, VLMReasoner

TEXTS = [
    "Heavy rain at night. Construction closes the right lane 35 m ahead; "
    "change to the left lane and slow to 20 km/h.",
    "Clear day. Road ahead is free; keep the lane at 50 km/h.",
    "Fog. A pedestrian is crossing 15 m ahead; yield and slow to 10 km/h.",
    "Clear day. The light is red 25 m ahead; stop at the line.",
]
# Small enough that every test builds its own model in well under a second.
SMALL = TinyVLMConfig(
    image_size=32, patch_size=16, vision_hidden=32, text_hidden=64, text_layers=2, max_positions=96
)


def _reasoner(seed: int = 0) -> VLMReasoner:
    return VLMReasoner.build_tiny(TEXTS, vlm_config=SMALL, embedding_dim=16, seed=seed).eval()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 128, 3), dtype=np.uint8)


def _labels(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    return rng.random((n, len(FLAGS))) < 0.3, rng.integers(0, len(INTENTS), n)


@torch.no_grad()
def _heads(r: VLMReasoner, images: np.ndarray) -> tuple[np.ndarray, ...]:
    out = r(r.encode(images))
    return tuple(t.numpy() for t in (out.embedding, out.flag_logits, out.intent_logits))


def test_forward_shapes_and_reason_agree():
    r = _reasoner()
    images = _images(3)
    emb, flags, intent = _heads(r, images)
    assert emb.shape == (3, 16) and flags.shape == (3, len(FLAGS)) and intent.shape == (3, 7)
    res = r.reason(images[1], frame=42)
    assert isinstance(r, ReasoningModel) and r.embedding_dim == 16
    assert res.frame == 42 and res.error is None and isinstance(res.text, str)
    assert res.intent.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all((res.flags >= 0) & (res.flags <= 1))
    # reason() pools the generate prefill: the same numbers as a heads-only forward.
    np.testing.assert_allclose(res.embedding, emb[1], atol=1e-5)
    np.testing.assert_allclose(res.flags, torch.sigmoid(torch.tensor(flags[1])).numpy(), atol=1e-5)


def test_encode_labels_and_pooling_ignores_targets():
    r = _reasoner()
    images = _images(2)
    prompts = ["Is it raining?", CAPTION_PROMPT]
    batch = r.encode(images, prompts, targets=["yes", TEXTS[0]])
    labels, prompt_mask = batch["labels"], batch["prompt_mask"].bool()
    tok = r.tokenizer
    for i, target in enumerate(["yes", TEXTS[0]]):
        labelled = labels[i][labels[i] != IGNORE_INDEX].tolist()
        assert labelled[-1] == tok.eos_token_id
        assert tok.decode(labelled[:-1]).strip() == target
        # nothing labelled inside the image + prompt, and no pad labelled
        assert (labels[i][prompt_mask[i]] == IGNORE_INDEX).all()
        assert (labels[i][batch["attention_mask"][i] == 0] == IGNORE_INDEX).all()
    image_id = tok.convert_tokens_to_ids("<image>")
    assert (labels[batch["input_ids"] == image_id] == IGNORE_INDEX).all()
    with torch.no_grad():
        with_targets = r(batch)
        prompt_only = r(r.encode(images, prompts))
    assert with_targets.lm_loss is not None and prompt_only.lm_loss is None
    torch.testing.assert_close(with_targets.embedding, prompt_only.embedding, atol=1e-5, rtol=0)


def test_save_reload_identical(tmp_path):
    r = _reasoner()
    images = _images(2)
    r.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert (tmp_path / "reasoner_heads.safetensors").exists()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))

    model = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    text = [r.prompt_text(CAPTION_PROMPT)] * 2
    rgb = [np.ascontiguousarray(im[..., ::-1]) for im in r.resize_for_model(images)]
    with torch.no_grad():
        inputs = processor(images=rgb, text=text, return_tensors="pt", padding=True)
        ours = r.model(**{k: v for k, v in r.encode(images).items() if k != "prompt_mask"})
        theirs = model(**inputs)
    torch.testing.assert_close(theirs.logits, ours.logits)

    loaded = VLMReasoner.from_pretrained(tmp_path)
    for a, b in zip(_heads(r, images), _heads(loaded, images), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.generate_text(images, 8) == r.generate_text(images, 8)


def test_plain_hf_directory_gets_fresh_heads(tmp_path, caplog):
    r = _reasoner()
    r.model.save_pretrained(tmp_path)
    r.processor.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="agent.reasoner.vlm"):
        loaded = VLMReasoner.from_pretrained(tmp_path, embedding_dim=24)
    assert "freshly initialised" in caplog.text
    res = loaded.reason(_images(1)[0], frame=3)
    assert res.embedding.shape == (24,) and res.flags.shape == (len(FLAGS),)


def test_generate_text_returns_strings():
    texts = _reasoner().generate_text(_images(2), max_new_tokens=5)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_lora_trains_only_adapters_and_merges_into_a_plain_model(tmp_path):
    r = _reasoner()
    n_lora = r.add_lora(r=4, alpha=8)
    trainable = {n for n, p in r.model.named_parameters() if p.requires_grad}
    assert n_lora > 0 and trainable and all("lora_" in n for n in trainable)
    assert all("language_model" in n and ("q_proj" in n or "v_proj" in n) for n in trainable)
    with pytest.raises(ValueError, match="merge_lora"):
        r.save_pretrained(tmp_path)
    with torch.no_grad():  # lora_B starts at zero: make the adapters matter
        for n, p in r.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    images = _images(2)
    before = _heads(r, images)
    r.merge_lora()
    assert not r.has_lora
    after = _heads(r, images)
    r.save_pretrained(tmp_path)
    loaded = VLMReasoner.from_pretrained(tmp_path)
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    for a, b, c in zip(before, after, _heads(loaded, images), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_array_equal(b, c)


def test_freeze_keeps_heads_trainable():
    r = _reasoner()
    r.freeze()
    assert not any(p.requires_grad for p in r.model.parameters())
    assert all(p.requires_grad for p in r.heads.parameters())
    r.unfreeze()
    assert all(p.requires_grad for p in r.parameters())


def test_a_few_training_steps_reduce_the_loss():
    r = _reasoner()
    images = _images(4)
    flags, intent = _labels(4)
    seen: dict[str, list[float]] = {}
    result = train_vlm(
        r,
        images,
        TEXTS,
        flags,
        intent,
        steps=30,
        batch_size=8,
        lr=3e-3,
        progress=False,
        log=lambda name, value, step: seen.setdefault(name, []).append(value),
    )
    assert set(result) >= {"lm", "flags", "intent", "total", "steps_per_s"}
    assert np.mean(seen["losses/lm"][-5:]) < 0.6 * np.mean(seen["losses/lm"][:3])
    assert np.mean(seen["losses/total"][-5:]) < np.mean(seen["losses/total"][:3])
    assert not r.training


def test_train_rejects_mismatched_labels():
    r = _reasoner()
    flags, intent = _labels(4)
    with pytest.raises(ValueError, match="`flags`"):
        train_vlm(r, _images(4), TEXTS, flags[:3], intent, steps=1, progress=False)


def test_training_samples_are_frame_major():
    flags, intent = _labels(4)
    samples = training_samples(TEXTS, flags, intent)
    assert len(samples) == 4 * SAMPLES_PER_FRAME
    assert samples[SAMPLES_PER_FRAME] == (CAPTION_PROMPT, TEXTS[1])
    answers = {t for p, t in samples if p.startswith("Is ")}
    assert answers <= {"yes", "no"}


def test_tokenizer_round_trips_unseen_text():
    tok = _reasoner().tokenizer
    text = "Snow at dusk. Tram 123 m ahead!"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_reasoning_checks_shapes():
    ok = dict(
        text="",
        flags=np.zeros(len(FLAGS), np.float32),
        intent=np.zeros(len(INTENTS), np.float32),
        embedding=np.zeros(8, np.float32),
        frame=0,
        latency_s=0.0,
    )
    Reasoning(**ok)
    with pytest.raises(ValueError, match="`flags`"):
        Reasoning(**{**ok, "flags": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="`embedding`"):
        Reasoning(**{**ok, "embedding": np.zeros((2, 4), np.float32)})
